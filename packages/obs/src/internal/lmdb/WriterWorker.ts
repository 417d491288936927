/**
 * The ingest writer thread: owns the write side of the LMDB environment (dedup high-water marks,
 * service cache, RED merges) and applies each round of planned batches (`WritePlan`, their bytes
 * transferred from the main thread, not copied) in one durable transaction.
 */
import { parentPort, workerData } from "node:worker_threads"
import type { WriteOutcome } from "../../Store.js"
import { openLayout } from "./LmdbLayout.js"
import { applyRound, makeWriteState } from "./LmdbWrite.js"
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

const layout = openLayout({ path, ...(mapSize !== undefined && { mapSize }) })
const state = makeWriteState(layout)

port.on("message", (request: WriterRequest | "close") => {
  if (request === "close") {
    layout.env.close().finally(() => port.close())
    return
  }
  const run = async () => {
    const outcomes = await layout.env.transaction(() => applyRound(layout, state, request.round))
    await layout.env.flushed
    return outcomes
  }
  run().then(
    (outcomes) => port.postMessage({ id: request.id, outcomes } satisfies WriterReply),
    (error: unknown) =>
      port.postMessage({
        id: request.id,
        error: error instanceof Error ? error.message : String(error)
      } satisfies WriterReply)
  )
})
port.postMessage("ready")
