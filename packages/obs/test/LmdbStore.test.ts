import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Exit, Fiber, Scope } from "effect"
import { describe, expect, it } from "vitest"
import * as LmdbStore from "../src/LmdbStore.js"
import { batch, span, traceId } from "./fixtures/Spans.js"
import { storeConformance } from "./StoreConformance.js"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "iii-obs-store-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

storeConformance("LmdbStore", () => Effect.flatMap(tempDir, (path) => LmdbStore.make({ path })))
storeConformance("LmdbStore with a writer thread", () =>
  Effect.flatMap(tempDir, (path) => LmdbStore.make({ path, writerThread: true }))
)

describe("LmdbStore", () => {
  it("keeps data across a reopen, and knows its spans: a re-sent batch is still a duplicate", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const s = span({ trace: 77 })
          yield* Effect.scoped(
            Effect.flatMap(LmdbStore.make({ path }), (st) => st.writer.write([batch("agent", 3, [s])]))
          )
          const reopened = yield* LmdbStore.make({ path })
          expect(yield* reopened.reader.trace(traceId(77))).toEqual([s])
          expect(yield* reopened.writer.write([batch("agent", 3, [s])])).toEqual(["duplicate"])
        })
      )
    ))

  it("fails writes fast once the writer thread is gone", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const inner = yield* Scope.make()
          const store = yield* LmdbStore.make({ path, writerThread: true }).pipe(Scope.extend(inner))
          expect(yield* store.writer.write([batch("a", 1, [span()])])).toEqual(["stored"])
          yield* Scope.close(inner, Exit.void)
          const error = yield* Effect.flip(store.writer.write([batch("a", 2, [span()])]))
          expect(error._tag).toBe("StoreError")
        })
      )
    ))

  it("reads what the writer thread acknowledged, even before lmdb renews this thread's snapshot", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* LmdbStore.make({ path: yield* tempDir, writerThread: true })
          for (let seq = 1; seq <= 40; seq++) {
            // Read in a timer callback (lmdb caches the snapshot until its own timer resets it), then keep
            // the thread busy until the commit's reply is queued: the event loop's poll phase delivers it
            // before the next timers phase, so a query right after the ack ran on the old snapshot.
            yield* Effect.sleep(1)
            yield* store.reader.trace(traceId(seq))
            const write = yield* Effect.fork(store.writer.write([batch("a", seq, [span({ trace: seq })])]))
            const busyUntil = Date.now() + 50
            while (Date.now() < busyUntil) {}
            expect(yield* Fiber.join(write)).toEqual(["stored"])
            expect((yield* store.reader.trace(traceId(seq))).length).toBe(1)
          }
        })
      )
    ))

  it("treats a path with a dot in its name as a directory", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const s = yield* LmdbStore.make({ path: join(dir, "obs.data") })
          expect(yield* s.writer.write([batch("a", 1, [span()])])).toEqual(["stored"])
        })
      )
    ))

  it("fails with a DataDirError naming the directory when the path cannot be used", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const file = join(dir, "not-a-directory")
          writeFileSync(file, "x")
          const error = yield* Effect.flip(LmdbStore.make({ path: join(file, "db") }))
          expect(error._tag).toBe("DataDirError")
          expect(error.message).toBe(`data directory ${join(file, "db")}: ${file} is not a directory`)
        })
      )
    ))
})
