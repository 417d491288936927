/**
 * A round writer whose transactions run in a worker thread (`WriterWorker.ts`), so that LMDB puts
 * and commits use the second core while the main thread reads sockets, decodes, plans the records
 * (`WritePlan.ts`) and serves queries.
 * Same semantics as the in-thread writer: `writeRound` succeeds after the round is durable.
 */
import { Worker } from "node:worker_threads"
import { Effect, type Scope } from "effect"
import { StoreError } from "../../Errors.js"
import type { WriteOutcome } from "../../Store.js"
import { type RoundWriter, transferList } from "./WritePlan.js"
import type { WriterReply, WriterRequest } from "./WriterWorker.js"

/** Running from TypeScript sources (tests), the worker needs Node's type stripping and our resolver. */
const workerOptions = () => {
  const fromSource = import.meta.url.endsWith(".ts")
  const script = new URL(fromSource ? "./WriterWorker.ts" : "./WriterWorker.js", import.meta.url)
  const execArgv = fromSource
    ? [
        "--experimental-transform-types",
        "--no-warnings",
        "--import",
        new URL("../../../../../scripts/ts-sources.mjs", import.meta.url).href
      ]
    : // Built: inherit the process's flags (e.g. --cpu-prof profiles the writer thread too).
      undefined
  return { script, execArgv }
}

export const make = (config: {
  readonly path: string
  readonly mapSize?: number
}): Effect.Effect<RoundWriter, StoreError, Scope.Scope> =>
  Effect.gen(function* () {
    const pending = new Map<
      number,
      { resolve: (o: ReadonlyArray<WriteOutcome>) => void; reject: (e: unknown) => void }
    >()
    let nextId = 0
    /** Set once the thread died (or is closing): writes then fail at once instead of waiting forever. */
    let dead: Error | undefined
    const die = (cause: Error) => {
      dead ??= cause
      for (const p of pending.values()) p.reject(cause)
      pending.clear()
    }
    let ready = false
    // Started inside the acquire (nothing there waits), awaited outside it: a start-up that hangs in
    // the thread stays interruptible, and interrupting it terminates the thread.
    const worker = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const { script, execArgv } = workerOptions()
        return new Worker(script, { workerData: config, ...(execArgv !== undefined && { execArgv }) })
      }),
      (w) =>
        Effect.promise(async () => {
          while (pending.size > 0) await new Promise((r) => setTimeout(r, 5))
          die(new Error("the store is closing"))
          if (!ready) return void (await w.terminate())
          const exited = new Promise((r) => w.once("exit", r))
          w.postMessage("close")
          const timeout = new Promise((r) => setTimeout(r, 10_000).unref())
          if ((await Promise.race([exited.then(() => "exited"), timeout])) !== "exited") await w.terminate()
        })
    )
    yield* Effect.async<void, StoreError>((resume) => {
      const failed = (cause: unknown) =>
        resume(Effect.fail(new StoreError({ operation: "open writer thread", cause })))
      const exited = (code: number) => failed(new Error(`the writer thread exited (code ${code})`))
      const first = (m: unknown) => {
        worker.off("error", failed)
        worker.off("exit", exited)
        if (m !== "ready") return failed(new Error(`unexpected first message ${String(m)}`))
        ready = true
        worker.on("message", (reply: WriterReply) => {
          const p = pending.get(reply.id)
          pending.delete(reply.id)
          if (p === undefined) return
          if ("error" in reply) p.reject(new Error(reply.error))
          else p.resolve(reply.outcomes)
        })
        worker.on("error", die)
        worker.on("exit", (code) => die(new Error(`the writer thread exited (code ${code})`)))
        resume(Effect.void)
      }
      worker.once("error", failed)
      worker.once("exit", exited)
      worker.once("message", first)
      return Effect.sync(() => {
        worker.off("error", failed)
        worker.off("exit", exited)
        worker.off("message", first)
      })
    })
    return {
      writeRound: (round) =>
        Effect.tryPromise({
          try: () =>
            new Promise<ReadonlyArray<WriteOutcome>>((resolve, reject) => {
              if (dead !== undefined) return reject(dead)
              const id = ++nextId
              // The plans' bytes are transferred, not copied: the writer thread only puts them (so a
              // plan is written once; posting one whose buffers are gone throws here).
              worker.postMessage({ id, round } satisfies WriterRequest, transferList(round))
              pending.set(id, { resolve, reject })
            }),
          catch: (cause) => new StoreError({ operation: "write", cause })
        })
    }
  })
