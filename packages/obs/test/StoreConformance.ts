/**
 * The behaviour every store implementation (local LMDB, later a ring router to remote nodes) must show.
 * `storeConformance(name, make)` registers the suite; `make` opens a fresh, empty store in the scope.
 */
import { Effect, Either, type Scope } from "effect"
import { describe, expect, it } from "vitest"
import type { Stores } from "../src/Store.js"
import { batch, log, ms, span, spanId, t0, traceId } from "./fixtures/Spans.js"

export type MakeStore = () => Effect.Effect<Stores, unknown, Scope.Scope>

export const storeConformance = (name: string, make: MakeStore) => {
  const run = <A>(f: (s: Stores) => Effect.Effect<A, unknown>) =>
    Effect.runPromise(Effect.scoped(Effect.flatMap(make(), f)))

  describe(`${name} conformance`, () => {
    it("returns every span of a trace ordered by start, with exact times and parent links", () =>
      run((s) =>
        Effect.gen(function* () {
          const root = span({ trace: 1, startTimeUnixNano: t0 + 5n })
          const child = span({
            trace: 1,
            parentSpanId: root.spanId,
            startTimeUnixNano: t0 + 7n,
            kind: "client"
          })
          const early = span({ trace: 1, parentSpanId: child.spanId, startTimeUnixNano: t0 + 6n })
          const other = span({ trace: 2 })
          expect(yield* s.writer.write([batch("a", 1, [child, root, other, early])])).toEqual(["stored"])
          const got = yield* s.reader.trace(traceId(1))
          expect(got.map((x) => x.spanId)).toEqual([root.spanId, early.spanId, child.spanId])
          expect(got[0]).toEqual(root)
          expect(got[2]?.parentSpanId).toBe(root.spanId)
          expect(yield* s.reader.trace(traceId(999))).toEqual([])
        })
      ))

    it("stores every span once whoever sends it how often: a re-sent batch is a duplicate, a late one is stored", () =>
      run((s) =>
        Effect.gen(function* () {
          const first = [span({ trace: 10 }), span({ trace: 10 })]
          expect(yield* s.writer.write([batch("agent-1", 1, first)])).toEqual(["stored"])
          // The same batch again, alone and twice inside one group commit.
          expect(yield* s.writer.write([batch("agent-1", 1, first)])).toEqual(["duplicate"])
          const pair = [span({ trace: 12 })]
          expect(yield* s.writer.write([batch("agent-3", 5, pair), batch("agent-3", 5, pair)])).toEqual([
            "stored",
            "duplicate"
          ])
          // Batches are not deduplicated by seq: one delivered late (a hint, a repair) is stored.
          const late = [span({ trace: 11 })]
          expect(yield* s.writer.write([batch("agent-1", 9, [span({ trace: 13 })])])).toEqual(["stored"])
          expect(yield* s.writer.write([batch("agent-1", 2, late)])).toEqual(["stored"])
          // A batch half stored already stores the other half, and lists no span twice.
          const half = [first[0] as (typeof first)[0], span({ trace: 10 })]
          expect(yield* s.writer.write([batch("agent-2", 1, half)])).toEqual(["stored"])
          expect((yield* s.reader.trace(traceId(10))).length).toBe(3)
          expect((yield* s.reader.trace(traceId(11))).length).toBe(1)
          const page = yield* s.reader.searchTraces({ limit: 100 })
          expect(page.traces.map((t) => t.traceId).sort()).toEqual(
            [traceId(10), traceId(11), traceId(12), traceId(13)].sort()
          )
          expect(page.traces.find((t) => t.traceId === traceId(10))?.spanCount).toBe(3)
        })
      ))

    it("searches newest first with service, route, status, duration and time filters", () =>
      run((s) =>
        Effect.gen(function* () {
          const spans = [
            span({ trace: 20, startTimeUnixNano: t0 + ms(1000) }),
            span({
              trace: 21,
              startTimeUnixNano: t0 + ms(2000),
              durationNano: 300_000_000,
              http: { method: "POST", route: "/pay", statusCode: 503 },
              error: true
            }),
            span({ trace: 22, startTimeUnixNano: t0 + ms(3000), service: "users" }),
            span({
              trace: 23,
              startTimeUnixNano: t0 + ms(4000),
              durationNano: 50_000_000,
              http: { method: "POST", route: "/pay", statusCode: 502 }
            }),
            span({
              trace: 24,
              startTimeUnixNano: t0 + ms(5000),
              http: { method: "GET", route: "/x", statusCode: 404 }
            })
          ]
          yield* s.writer.write([batch("a", 1, spans)])
          const ids = (q: Parameters<Stores["reader"]["searchTraces"]>[0]) =>
            s.reader.searchTraces(q).pipe(Effect.map((p) => p.traces.map((t) => t.traceId)))
          expect(yield* ids({ limit: 10 })).toEqual([
            traceId(24),
            traceId(23),
            traceId(22),
            traceId(21),
            traceId(20)
          ])
          expect(yield* ids({ limit: 10, service: "checkout" })).toEqual([
            traceId(24),
            traceId(23),
            traceId(21),
            traceId(20)
          ])
          expect(yield* ids({ limit: 10, service: "checkout", route: "/pay" })).toEqual([
            traceId(23),
            traceId(21)
          ])
          expect(
            yield* ids({ limit: 10, service: "checkout", status: "5xx", minDurationNano: 200_000_000 })
          ).toEqual([traceId(21)])
          expect(yield* ids({ limit: 10, status: "5xx" })).toEqual([traceId(23), traceId(21)])
          expect(yield* ids({ limit: 10, status: "5xx", minDurationNano: 100_000_000 })).toEqual([
            traceId(21)
          ])
          expect(yield* ids({ limit: 10, status: "4xx" })).toEqual([traceId(24)])
          expect(yield* ids({ limit: 10, status: "error" })).toEqual([traceId(21)])
          expect(yield* ids({ limit: 10, sinceNano: t0 + ms(2000), untilNano: t0 + ms(4000) })).toEqual([
            traceId(22),
            traceId(21)
          ])
          expect(yield* ids({ limit: 10, service: "nobody" })).toEqual([])
          const page = yield* s.reader.searchTraces({ limit: 10, service: "checkout", route: "/pay" })
          const summary = page.traces[1]
          expect(summary?.errorCount).toBe(1)
          expect(summary?.spanCount).toBe(1)
          expect(summary?.rootService).toBe("checkout")
          expect(summary?.startTimeUnixNano).toBe(t0 + ms(2000))
          expect(page.nextCursor).toBeUndefined()
        })
      ))

    it("pages through every matching trace exactly once with the cursor", () =>
      run((s) =>
        Effect.gen(function* () {
          const spans = Array.from({ length: 57 }, (_, i) =>
            span({
              trace: 100 + i,
              service: i % 3 === 0 ? "users" : "checkout",
              startTimeUnixNano: t0 + ms(i % 20)
            })
          )
          yield* s.writer.write([batch("a", 1, spans)])
          for (const service of [undefined, "checkout"]) {
            const seen: Array<string> = []
            let cursor: string | undefined
            for (let pages = 0; pages < 100; pages++) {
              const page = yield* s.reader.searchTraces({
                limit: 7,
                ...(service !== undefined && { service }),
                ...(cursor !== undefined && { cursor })
              })
              seen.push(...page.traces.map((t) => t.traceId))
              if (page.nextCursor === undefined) break
              cursor = page.nextCursor
            }
            const expected = spans.filter((x) => service === undefined || x.service === service)
            expect(new Set(seen).size).toBe(seen.length)
            expect(seen.length).toBe(expected.length)
          }
        })
      ))

    it("pages newest first across many time buckets and batches, each trace once, at its newest match", () =>
      run((s) =>
        Effect.gen(function* () {
          // 400 spans over 2 s from two agents; every fifth trace also has a span a second later.
          const spans = Array.from({ length: 400 }, (_, i) =>
            span({
              trace: 1000 + (i % 5 === 4 ? i - 4 : i),
              startTimeUnixNano: t0 + ms((i * 5) % 2000) + BigInt(i % 5 === 4 ? 1e9 : 0),
              durationNano: ((i * 7) % 300) * 1_000_000 + 1,
              http: { method: "GET", route: "/r", statusCode: i % 3 === 0 ? 500 : 200 }
            })
          )
          yield* s.writer.write([batch("a", 1, spans.slice(0, 150)), batch("b", 1, spans.slice(150, 300))])
          yield* s.writer.write([batch("a", 2, spans.slice(300))])
          const micros = (x: (typeof spans)[number]) => Number(x.startTimeUnixNano / 1000n)
          const newestFirst = (x: (typeof spans)[number], y: (typeof spans)[number]) =>
            micros(y) - micros(x) ||
            (x.traceId < y.traceId ? 1 : x.traceId > y.traceId ? -1 : 0) ||
            (x.spanId < y.spanId ? 1 : -1)
          const since = t0 + ms(300)
          const until = t0 + ms(1700)
          const minDurationNano = 100_000_000
          // With a service: the per-service index; without: the status index, over its duration bands.
          for (const filter of [
            { service: "checkout" },
            { service: "checkout", status: "5xx" as const },
            { service: "checkout", sinceNano: since, untilNano: until },
            { status: "5xx" as const },
            { status: "5xx" as const, minDurationNano },
            { status: "5xx" as const, sinceNano: since, untilNano: until }
          ]) {
            const expected: Array<string> = []
            for (const x of spans
              .filter(
                (x) =>
                  (!("status" in filter) || (x.http?.statusCode ?? 0) >= 500) &&
                  (!("minDurationNano" in filter) || x.durationNano >= minDurationNano) &&
                  (!("sinceNano" in filter) || (x.startTimeUnixNano >= since && x.startTimeUnixNano < until))
              )
              .sort(newestFirst))
              if (!expected.includes(x.traceId)) expected.push(x.traceId)
            const seen: Array<string> = []
            let cursor: string | undefined
            for (let pages = 0; pages < 200; pages++) {
              const page = yield* s.reader.searchTraces({
                limit: 9,
                ...filter,
                ...(cursor !== undefined && { cursor })
              })
              seen.push(...page.traces.map((t) => t.traceId))
              if (page.nextCursor === undefined) break
              cursor = page.nextCursor
            }
            expect(seen).toEqual(expected)
          }
        })
      ))

    it("correlates traces and logs by correlation id", () =>
      run((s) =>
        Effect.gen(function* () {
          const a = span({ trace: 30, correlationId: "order-7", startTimeUnixNano: t0 + ms(1) })
          const b = span({ trace: 31, correlationId: "order-7", startTimeUnixNano: t0 + ms(2) })
          const c = span({ trace: 32, correlationId: "order-8" })
          const logs = [
            log({ correlationId: "order-7", body: "second", timeUnixNano: t0 + ms(5) }),
            log({ correlationId: "order-7", body: "first", timeUnixNano: t0 + ms(4) }),
            log({ traceId: traceId(40), body: "by trace id" }),
            log({ body: "uncorrelated" })
          ]
          const own = span({ trace: 33 })
          yield* s.writer.write([batch("a", 1, [a, b, c, own], { logs })])
          // A trace id correlates its own trace, whatever correlation id its spans carry.
          expect(yield* s.reader.correlatedTraceIds(traceId(33), 10)).toEqual([traceId(33)])
          expect(yield* s.reader.correlatedTraceIds(traceId(32), 10)).toEqual([traceId(32)])
          expect(yield* s.reader.correlatedTraceIds("order-7", 10)).toEqual([traceId(31), traceId(30)])
          expect(yield* s.reader.correlatedTraceIds("order-7", 1)).toEqual([traceId(31)])
          expect(yield* s.reader.correlatedTraceIds("order-", 10)).toEqual([])
          expect((yield* s.reader.logs("order-7", 10)).map((l) => l.body)).toEqual(["first", "second"])
          expect((yield* s.reader.logs(traceId(40), 10)).map((l) => l.body)).toEqual(["by trace id"])
          expect(yield* s.reader.logs("nothing", 10)).toEqual([])
        })
      ))

    it("rolls server spans up into RED cells per route and for all routes", () =>
      run((s) =>
        Effect.gen(function* () {
          const base = t0 + 20_000_000_000n // bucket-aligned (t0 is a whole minute)
          const spans = [
            ...Array.from({ length: 90 }, (_, i) =>
              span({ startTimeUnixNano: base + ms(i), durationNano: (i + 1) * 1_000_000 })
            ),
            ...Array.from({ length: 10 }, (_, i) =>
              span({
                startTimeUnixNano: base + ms(i),
                durationNano: 1_000_000_000,
                error: true,
                http: { method: "POST", route: "/pay", statusCode: 500 }
              })
            ),
            span({ startTimeUnixNano: base + 10_000_000_000n, durationNano: 5_000_000 }),
            span({ startTimeUnixNano: base, kind: "client" })
          ]
          // Two writes into the same bucket must merge; a batch sent again counts once.
          yield* s.writer.write([batch("a", 1, spans.slice(0, 50))])
          yield* s.writer.write([batch("a", 2, spans.slice(50)), batch("a", 1, spans.slice(0, 50))])
          yield* s.writer.write([batch("a", 2, spans.slice(50))])
          const sec = Number(base / 1_000_000_000n)
          const all = yield* s.reader.red("checkout", undefined, sec, sec + 20)
          expect(all.map((c) => [c.bucketStartSec, c.count, c.errors])).toEqual([
            [sec, 100, 10],
            [sec + 10, 1, 0]
          ])
          expect(all[0]?.sketch.count).toBe(100)
          const pay = yield* s.reader.red("checkout", "/pay", sec, sec + 20)
          expect(pay.map((c) => [c.count, c.errors, c.route])).toEqual([[10, 10, "/pay"]])
          expect(yield* s.reader.red("checkout", undefined, sec + 20, sec + 60)).toEqual([])
          expect(yield* s.reader.red("nobody", undefined, sec, sec + 20)).toEqual([])
        })
      ))

    it("lists services with their composition labels", () =>
      run((s) =>
        Effect.gen(function* () {
          yield* s.writer.write([
            batch("a", 1, [
              span({ service: "users", component: "users-api" }),
              span({ startTimeUnixNano: t0 + ms(9) })
            ])
          ])
          const services = yield* s.reader.services()
          expect(services.map((x) => [x.service, x.component, x.composition])).toEqual([
            ["checkout", "checkout", "shop"],
            ["users", "users-api", "shop"]
          ])
          expect(services[0]?.lastSeenUnixNano).toBe(t0 + ms(9))
        })
      ))

    it("retention removes everything older than the cutoff and keeps the rest", () =>
      run((s) =>
        Effect.gen(function* () {
          const day = 86_400_000_000_000n
          const old = Array.from({ length: 2500 }, (_, i) =>
            span({ trace: 50_000 + i, correlationId: "old", startTimeUnixNano: t0 + ms(i) })
          )
          const fresh = span({ trace: 60_000, correlationId: "new", startTimeUnixNano: t0 + day })
          yield* s.writer.write([
            batch("a", 1, [...old, fresh], {
              logs: [log({ correlationId: "old" }), log({ correlationId: "new", timeUnixNano: t0 + day })]
            })
          ])
          const result = yield* s.maintenance.deleteOlderThan(t0 + day / 2n)
          expect(result.deletedSpans).toBe(2500)
          expect(result.deletedLogs).toBe(1)
          expect(result.deletedRollups).toBeGreaterThan(0)
          expect(yield* s.reader.trace(traceId(50_000))).toEqual([])
          expect(yield* s.reader.correlatedTraceIds("old", 10)).toEqual([])
          expect(yield* s.reader.logs("old", 10)).toEqual([])
          expect(
            (yield* s.reader.searchTraces({ limit: 10, status: "2xx" })).traces.map((t) => t.traceId)
          ).toEqual([traceId(60_000)])
          expect((yield* s.reader.trace(traceId(60_000))).length).toBe(1)
          expect((yield* s.reader.logs("new", 10)).length).toBe(1)
          const sec = Number((t0 + day) / 1_000_000_000n)
          expect((yield* s.reader.red("checkout", undefined, sec - 10, sec + 10)).length).toBe(1)
          expect((yield* s.maintenance.deleteOlderThan(t0 + day / 2n)).deletedSpans).toBe(0)
          expect((yield* s.maintenance.stats()).spans).toBe(1)
          yield* s.maintenance.check()
        })
      ))

    it("tells its newest span start (none when empty), across services and batches, after retention too", () =>
      run((s) =>
        Effect.gen(function* () {
          expect(yield* s.maintenance.newestSpanStart()).toBeUndefined()
          yield* s.writer.write([
            batch("a", 1, [
              span({ service: "a", startTimeUnixNano: t0 + ms(5) + 123_000n }),
              span({ service: "b", startTimeUnixNano: t0 + ms(900) + 7_000n }),
              span({ service: "b", startTimeUnixNano: t0 + ms(2) })
            ]),
            batch("a", 2, [span({ service: "a", startTimeUnixNano: t0 + ms(40) })])
          ])
          expect(yield* s.maintenance.newestSpanStart()).toBe(t0 + ms(900) + 7_000n)
          yield* s.maintenance.deleteOlderThan(t0 + ms(1000))
          expect(yield* s.maintenance.newestSpanStart()).toBeUndefined()
        })
      ))

    it("keeps ids that share a prefix apart", () =>
      run((s) =>
        Effect.gen(function* () {
          yield* s.writer.write([
            batch("a", 1, [
              span({ correlationId: "abc", service: "svc" }),
              span({ correlationId: "abcd", service: "svc-2" })
            ])
          ])
          expect((yield* s.reader.correlatedTraceIds("abc", 10)).length).toBe(1)
          expect((yield* s.reader.searchTraces({ service: "svc", limit: 10 })).traces.length).toBe(1)
          expect(spanId(1)).toHaveLength(16)
        })
      ))

    it("plans each batch on arrival and writes rounds of plans, outcomes in order, counts in the plans", () =>
      run((s) =>
        Effect.gen(function* () {
          const first = yield* s.writer.plan(
            batch("seam", 1, [span({ trace: 60 }), span({ trace: 60 })], {
              logs: [log({ traceId: traceId(60) })]
            })
          )
          const late = [span({ trace: 61 })]
          const second = yield* s.writer.plan(batch("seam", 2, late))
          expect([first.spanCount, first.logCount, first.metricCount]).toEqual([2, 1, 0])
          // Nothing is stored by planning.
          expect(yield* s.reader.trace(traceId(60))).toEqual([])
          expect(yield* s.writer.writeRound([first, second])).toEqual(["stored", "stored"])
          expect((yield* s.reader.trace(traceId(60))).length).toBe(2)
          expect((yield* s.reader.trace(traceId(61))).length).toBe(1)
          const again = yield* s.writer.plan(batch("seam", 2, late))
          expect(yield* s.writer.writeRound([again])).toEqual(["duplicate"])
        })
      ))

    it("refuses at plan, alone, a batch whose labels cannot fit in an index key", () =>
      run((s) =>
        Effect.gen(function* () {
          const huge = span({
            trace: 62,
            service: "s".repeat(1_000),
            http: { method: "GET", route: "/".repeat(1_000) }
          })
          const refused = s.writer.plan(batch("seam", 1, [span({ trace: 63 }), huge]))
          expect(Either.isLeft(refused) && refused.left._tag).toBe("UnindexableSpan")
          expect(Either.isLeft(refused) && refused.left.message).toContain("spans[1]")
          expect(yield* s.writer.write([batch("seam", 2, [span({ trace: 64 })])])).toEqual(["stored"])
          expect(yield* s.reader.trace(traceId(63))).toEqual([])
          expect((yield* s.reader.trace(traceId(64))).length).toBe(1)
        })
      ))

    it("stores large spans and non-ASCII names in a big round and finds them by every index", () =>
      run((s) =>
        Effect.gen(function* () {
          const big = span({
            trace: 50,
            service: "käse-☃-服务",
            correlationId: `order-${"ß".repeat(100)}`,
            http: { method: "GET", route: "/x", statusCode: 502 },
            error: true,
            attributes: { "big.value": "x".repeat(50_000) }
          })
          const many = Array.from({ length: 300 }, (_, i) => span({ trace: 100 + i }))
          expect(yield* s.writer.write([batch("a", 1, [big, ...many]), batch("b", 1, many)])).toEqual([
            "stored",
            "stored"
          ])
          expect(yield* s.reader.trace(traceId(50))).toEqual([big])
          expect(yield* s.reader.correlatedTraceIds(big.correlationId, 10)).toEqual([traceId(50)])
          const errors = yield* s.reader.searchTraces({ status: "5xx", limit: 10 })
          expect(errors.traces.map((t) => t.traceId)).toEqual([traceId(50)])
          expect((yield* s.reader.services()).map((x) => x.service)).toContain(big.service)
        })
      ))
  })
}
