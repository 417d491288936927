import { randomBytes } from "node:crypto"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Telemetry, TraceContext } from "@iii/core"
import { Effect, Exit, Fiber, Scope } from "effect"
import { describe, expect, it } from "vitest"
import {
  epochEntries,
  epochOf,
  epochStart,
  indexEntries,
  layoutVersion,
  spanBucket,
  traceIndexRange,
  traceIndexRound
} from "../src/internal/lmdb/Keys.js"
import { openLayout } from "../src/internal/lmdb/LmdbLayout.js"
import * as Read from "../src/internal/lmdb/LmdbRead.js"
import * as TraceFilter from "../src/internal/lmdb/TraceFilter.js"
import * as LmdbStore from "../src/LmdbStore.js"
import { batch, ms, span, t0, traceId } from "./fixtures/Spans.js"
import { storeConformance } from "./StoreConformance.js"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "iii-obs-store-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

storeConformance("LmdbStore", () => Effect.flatMap(tempDir, (path) => LmdbStore.make({ path })))
storeConformance("LmdbStore with a writer thread", () =>
  Effect.flatMap(tempDir, (path) => LmdbStore.make({ path, writerThread: true }))
)

/** A trace id another tracer minted: 16 random bytes, no time in front. */
const foreign = () => randomBytes(16).toString("hex") as Telemetry.TraceId
/** `n` spans of as many foreign traces. */
const others = (n: number) => Array.from({ length: n }, () => span({ traceId: foreign() }))

/** The VmFlags of this process's mappings of `file` (/proc/self/smaps), one string per mapping. */
const mappingFlags = (file: string): Array<string> =>
  readFileSync("/proc/self/smaps", "utf8")
    .split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)
    .filter((mapping) => (mapping.split("\n")[0] ?? "").endsWith(` ${file}`))
    .map((mapping) => /^VmFlags:(.*)$/m.exec(mapping)?.[1]?.trim() ?? "")
const noSmaps = existsSync("/proc/self/smaps") ? undefined : "no /proc/self/smaps (not Linux)"
if (noSmaps !== undefined) console.warn(`LmdbStore read-around test skipped: ${noSmaps}`)

describe("LmdbStore", () => {
  it.skipIf(noSmaps !== undefined)(
    "maps its data file for random reads: a page fault reads the page, not the readahead window around it (smaps' rr flag)",
    () =>
      Effect.runPromise(
        Effect.scoped(
          Effect.gen(function* () {
            const path = yield* tempDir
            const s = yield* LmdbStore.make({ path })
            expect(yield* s.writer.write([batch("a", 1, [span({ trace: 5 })])])).toEqual(["stored"])
            const flags = mappingFlags(join(path, "data.mdb"))
            expect(flags.length).toBeGreaterThan(0)
            for (const f of flags) expect(f.split(" ")).toContain("rr")
          })
        )
      )
  )

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

  it("finds a trace with a random id (another tracer's) across span buckets, batches and writer restarts (index epochs)", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const id = foreign()
          const ours = [0, 3, 25, 1_000, 60_000].map((at) =>
            span({ traceId: id, correlationId: id, startTimeUnixNano: t0 + ms(at) })
          )
          // Two writers, one after the other: each writes in an epoch of its own.
          for (const [seq, mine] of [
            [1, ours.slice(0, 3)],
            [2, ours.slice(3)]
          ] as const)
            yield* Effect.scoped(
              Effect.flatMap(LmdbStore.make({ path, writerThread: seq === 2 }), (st) =>
                st.writer.write([batch("agent", seq, [...others(300), ...mine])])
              )
            )
          yield* Effect.sync(() => {
            const layout = openLayout({ path })
            const epochs = new Set(Array.from(layout.traceIndex.getKeys(), epochOf))
            layout.env.close()
            expect(epochs.size).toBe(2)
          })
          const store = yield* LmdbStore.make({ path })
          expect(yield* store.reader.trace(id)).toEqual(ours)
          expect(yield* store.reader.correlatedTraceIds(id, 10)).toEqual([id])
          expect(yield* store.reader.trace("not-a-trace-id")).toEqual([])
          expect(yield* store.writer.write([batch("agent", 2, [...ours.slice(3)])])).toEqual(["duplicate"])
        })
      )
    ))

  it("finds a trace whose id starts with its time (iii's) in that time's bucket, with no trace index entry, and a span of it long after through the index", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const startMs = Number(t0 / 1_000_000n)
          const id = TraceContext.newTraceId(startMs)
          const at = (offsetMs: number) =>
            span({ traceId: id, correlationId: id, startTimeUnixNano: t0 + ms(offsetMs) })
          // Within the hour after the id's time: in the id's bucket; two hours later: by its start.
          const near = [at(0), at(5), at(30_000), at(-1_000)]
          const late = at(2 * 3_600_000)
          yield* Effect.scoped(
            Effect.flatMap(LmdbStore.make({ path }), (st) => st.writer.write([batch("a", 1, near)]))
          )
          yield* Effect.sync(() => {
            const layout = openLayout({ path })
            const entries = Array.from(layout.traceIndex.getKeys()).length
            layout.env.close()
            expect(entries).toBe(0)
          })
          const store = yield* LmdbStore.make({ path })
          expect(yield* store.writer.write([batch("a", 2, [late])])).toEqual(["stored"])
          expect(yield* store.reader.trace(id)).toEqual([near[3], near[0], near[1], near[2], late])
          expect(yield* store.reader.correlatedTraceIds(id, 10)).toEqual([id])
          expect((yield* store.maintenance.deleteOlderThan(t0 + ms(3_600_000))).deletedSpans).toBe(4)
          expect(yield* store.reader.trace(id)).toEqual([late])
        })
      )
    ))

  it("retention deletes the trace index groups whose buckets it deletes", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const cutoff = t0 + ms(10_000)
          yield* Effect.scoped(
            Effect.gen(function* () {
              const store = yield* LmdbStore.make({ path })
              const old = Array.from({ length: 2_500 }, (_, i) => span({ startTimeUnixNano: t0 + ms(i) }))
              const kept = span({ trace: 9, startTimeUnixNano: cutoff + ms(1) })
              // Separate writes: a group (a round's entries of ids of one first byte) goes once all its
              // entries are older than the cutoff.
              yield* store.writer.write([batch("a", 1, old)])
              yield* store.writer.write([batch("a", 2, [kept])])
              expect((yield* store.maintenance.deleteOlderThan(cutoff)).deletedSpans).toBe(2_500)
              expect((yield* store.reader.trace(traceId(9))).length).toBe(1)
            })
          )
          const layout = openLayout({ path })
          const buckets = Array.from(layout.traceIndex.getRange(), ({ value }) =>
            Array.from(indexEntries(value), ([, bucket]) => bucket)
          ).flat()
          layout.env.close()
          expect(buckets).toEqual([spanBucket(Number((cutoff + ms(1)) / 1000n))])
        })
      )
    ))

  it("seals each epoch of the trace index with a Bloom filter: a lookup reads only the epochs whose filter may hold the id, finds a trace across them, and survives a false positive", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const id = foreign()
          const ours = [0, 1].map((at) =>
            span({ traceId: id, correlationId: id, startTimeUnixNano: t0 + ms(at) })
          )
          const store = yield* LmdbStore.make({ path })
          // Epoch 1 is sealed after the round that takes it to epochEntries; epoch 2 is current.
          yield* store.writer.write([batch("a", 1, [...others(epochEntries / 2), ours[0] as Telemetry.Span])])
          yield* store.writer.write([batch("a", 2, others(epochEntries / 2))])
          yield* store.writer.write([batch("a", 3, [...others(10), ours[1] as Telemetry.Span])])
          const layout = openLayout({ path })
          const stored = layout.traceFilters.getBinary(epochStart(1))
          const filter = stored === undefined ? undefined : TraceFilter.decode(stored)
          if (filter === undefined) throw new Error("epoch 1 has a filter")
          expect(Array.from(layout.traceFilters.getKeys(), epochOf)).toEqual([1])
          const indexed = Array.from(
            layout.traceIndex.getRange({ start: epochStart(1), end: epochStart(2) }),
            ({ value }) => Array.from(indexEntries(value), ([id]) => TraceFilter.idHash(id))
          ).flat()
          expect(indexed.length).toBe(epochEntries + 1)
          expect(indexed.every((hash) => TraceFilter.mayHold(filter, hash))).toBe(true)
          expect(yield* store.reader.trace(id)).toEqual(ours)
          // An entry of an id the filter does not hold is not read: a span indexed in the current
          // epoch, its entry then moved to epoch 1, is not found.
          let absent = foreign()
          while (TraceFilter.mayHold(filter, TraceFilter.idHash(Buffer.from(absent, "hex"))))
            absent = foreign()
          yield* store.writer.write([batch("b", 1, [span({ traceId: absent, correlationId: absent })])])
          // The newest group of its id in epoch 2: that write's, holding this entry alone.
          const entry = Array.from(
            layout.traceIndex.getRange(traceIndexRange(2, TraceFilter.idHash(Buffer.from(absent, "hex"))))
          ).pop()
          if (entry === undefined) throw new Error("the span has an index entry in epoch 2")
          expect(Array.from(indexEntries(entry.value), ([id]) => Buffer.from(id).toString("hex"))).toEqual([
            absent
          ])
          const moved = Buffer.from(entry.key)
          moved.writeUInt32BE(1, 0)
          yield* Effect.promise(() =>
            layout.traceIndex.transaction(() => {
              layout.traceIndex.remove(entry.key)
              layout.traceIndex.put(moved, Buffer.from(entry.value))
            })
          )
          expect(yield* store.reader.trace(absent)).toEqual([])
          // A false positive (the filter may hold an id it does not) costs a read and finds nothing more.
          let falsePositive = foreign()
          while (!TraceFilter.mayHold(filter, TraceFilter.idHash(Buffer.from(falsePositive, "hex"))))
            falsePositive = foreign()
          const late = span({ traceId: falsePositive, correlationId: falsePositive })
          yield* store.writer.write([batch("b", 2, [late])])
          expect(yield* store.reader.trace(falsePositive)).toEqual([late])
          layout.env.close()
        })
      )
    ))

  it("compacts each epoch it seals, at the round that fills it or at open, into one value per group, keeping every entry", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const id = foreign()
          const ours = [0, 1, 2, 3].map((at) =>
            span({ traceId: id, correlationId: id, startTimeUnixNano: t0 + ms(at * 20) })
          )
          const quarter = epochEntries / 4
          /** Per epoch: its keys' rounds per group, and its entries. */
          const epochs = () => {
            const layout = openLayout({ path })
            const found = new Map<number, { rounds: Map<number, Array<number>>; entries: number }>()
            for (const { key, value } of layout.traceIndex.getRange()) {
              const epoch = epochOf(key)
              const e = found.get(epoch) ?? { rounds: new Map(), entries: 0 }
              found.set(epoch, e)
              e.rounds.set(key[4] as number, [
                ...(e.rounds.get(key[4] as number) ?? []),
                traceIndexRound(key)
              ])
              e.entries += Array.from(indexEntries(value)).length
            }
            layout.env.close()
            return found
          }
          yield* Effect.scoped(
            Effect.gen(function* () {
              const store = yield* LmdbStore.make({ path })
              // Four rounds, each with a span of ours, fill epoch 1 (the last one seals it); two more
              // start epoch 2.
              for (let seq = 1; seq <= 6; seq++)
                yield* store.writer.write([
                  batch(
                    "a",
                    seq,
                    seq <= 4 ? [...others(quarter - 1), ours[seq - 1] as Telemetry.Span] : others(quarter)
                  )
                ])
              const [first, second] = [epochs().get(1), epochs().get(2)]
              // One value per group, under a round the epoch had not used (the 4 rounds were 0–3).
              expect(
                Array.from(first?.rounds.values() ?? []).every((r) => r.length === 1 && r[0] === 4)
              ).toBe(true)
              expect(first?.rounds.size).toBe(256)
              expect(first?.entries).toBe(4 * quarter)
              expect(Array.from(second?.rounds.values() ?? []).some((r) => r.length === 2)).toBe(true)
              expect(yield* store.reader.trace(id)).toEqual(ours)
            })
          )
          // The next writer seals epoch 2 at open: compacted as well (its rounds were 4 and 5: a writer
          // numbers its rounds across its epochs).
          const store = yield* LmdbStore.make({ path })
          const second = epochs().get(2)
          expect(Array.from(second?.rounds.values() ?? []).every((r) => r.length === 1 && r[0] === 6)).toBe(
            true
          )
          expect(second?.entries).toBe(2 * quarter)
          expect(yield* store.reader.trace(id)).toEqual(ours)
        })
      )
    ))

  it("spreads a round's trace index entries over groups by their ids' hash, ids that share a prefix too, and finds each", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const store = yield* LmdbStore.make({ path })
          // The fixture's ids share their first 8 bytes, as X-Ray's time-prefixed ones share theirs.
          const spans = Array.from({ length: 1_000 }, (_, i) => span({ trace: i + 1 }))
          yield* store.writer.write([batch("a", 1, spans)])
          const layout = openLayout({ path })
          const groups = Array.from(layout.traceIndex.getRange(), ({ key, value }) => ({
            key: Buffer.from(key).toString("hex"),
            entries: Array.from(indexEntries(value)).length
          }))
          layout.env.close()
          expect(groups.reduce((sum, group) => sum + group.entries, 0)).toBe(1_000)
          expect(groups.length).toBeGreaterThan(200)
          expect(Math.max(...groups.map((group) => group.entries))).toBeLessThan(20)
          for (const s of [spans[0], spans[500], spans[999]])
            expect(yield* store.reader.trace(s?.traceId ?? "")).toEqual([s])
        })
      )
    ))

  it("rebuilds, at open, the filter of an epoch left without one or with damaged bytes; lookups read such an epoch whole meanwhile; retention drops filters with their epochs", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const old = (n: number) =>
            Array.from({ length: n }, (_, i) =>
              span({ traceId: foreign(), startTimeUnixNano: t0 + ms(i / 100) })
            )
          const id = foreign()
          const ours = span({ traceId: id, correlationId: id, startTimeUnixNano: t0 })
          // Three writers: epoch 1 sealed, epochs 2 and 3 left unsealed by writers that stopped.
          yield* Effect.scoped(
            Effect.flatMap(LmdbStore.make({ path }), (st) =>
              st.writer.write([batch("a", 1, [ours, ...old(epochEntries)])])
            )
          )
          for (const seq of [2, 3])
            yield* Effect.scoped(
              Effect.flatMap(LmdbStore.make({ path }), (st) => st.writer.write([batch("a", seq, old(10))]))
            )
          const filters = () => {
            const layout = openLayout({ path })
            const found = Array.from(layout.traceFilters.getRange(), ({ key, value }) => [
              epochOf(key),
              TraceFilter.decode(value) !== undefined
            ])
            layout.env.close()
            return found
          }
          // Each writer, at open, sealed the epochs before its own.
          expect(filters()).toEqual([
            [1, true],
            [2, true]
          ])
          const layout = openLayout({ path })
          yield* Effect.promise(() => layout.traceFilters.put(epochStart(1), Buffer.from("not a filter")))
          expect(Read.readTrace(layout, id)).toEqual([ours])
          yield* Effect.promise(() => layout.env.close())
          const store = yield* LmdbStore.make({ path })
          expect(filters()).toEqual([
            [1, true],
            [2, true],
            [3, true]
          ])
          expect(yield* store.reader.trace(id)).toEqual([ours])
          const kept = span({ traceId: foreign(), startTimeUnixNano: t0 + ms(60_000) })
          yield* store.writer.write([batch("a", 4, [kept])])
          yield* store.maintenance.deleteOlderThan(t0 + ms(30_000))
          expect(filters()).toEqual([])
          expect(yield* store.reader.trace(id)).toEqual([])
          expect(yield* store.reader.trace(kept.traceId)).toEqual([kept])
        })
      )
    ))

  it("refuses a data directory written with another layout, naming both versions", () =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const path = yield* tempDir
          const layout = openLayout({ path })
          layout.meta.putSync("layout", layoutVersion - 1)
          yield* Effect.promise(() => layout.env.close())
          const error = yield* Effect.flip(LmdbStore.make({ path }))
          expect(error.message).toContain(
            `data directory has layout version ${layoutVersion - 1}; this build reads version ${layoutVersion}`
          )
        })
      )
    ))
})
