/**
 * The ingest writer thread: owns the write side of the LMDB environment (dedup high-water marks,
 * service cache, RED merges) and applies each round of planned batches (`WritePlan`, their bytes
 * transferred from the main thread, not copied) in one durable transaction.
 */
import { parentPort, workerData } from "node:worker_threads"
import { Errors } from "@iii/core"
import type { WriteOutcome } from "../../Store.js"
import { openLayout } from "./LmdbLayout.js"
import { commitRound, makeWriteState } from "./LmdbWrite.js"
import type { BatchPlan } from "./WritePlan.js"

export interface WriterRequest {
  readonly id: number
  readonly round: ReadonlyArray<BatchPlan>
}

export type WriterReply =
  | { readonly id: number; readonly outcomes: ReadonlyArray<WriteOutcome> }
  | { readonly id: number; readonly error: string }

const { path, mapSize } = workerData as { path: string; mapSize?: number }
const port = parentPort
if (port === null) throw new Error("WriterWorker must run in a worker thread")

// lmdb rejects a promise of its own for a write made inside a transaction whose commit fails (a
// full disk) and leaves it unhandled; the failure reaches the round through commitRound, but the
// stray rejection would end this thread, and every later round with it.
process.on("unhandledRejection", (reason) => {
  if (typeof reason === "object" && reason !== null && "commitError" in reason) return
  throw reason
})

const layout = openLayout({ path, ...(mapSize !== undefined && { mapSize }) })
const state = makeWriteState(layout)

port.on("message", (request: WriterRequest | "close") => {
  if (request === "close") {
    layout.env.close().finally(() => port.close())
    return
  }
  commitRound(layout, state, request.round).then(
    (outcomes) => port.postMessage({ id: request.id, outcomes } satisfies WriterReply),
    (error: unknown) =>
      port.postMessage({
        id: request.id,
        error: Errors.messageOf(error)
      } satisfies WriterReply)
  )
})
port.postMessage("ready")
