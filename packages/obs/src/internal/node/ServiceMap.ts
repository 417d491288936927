/**
 * Who calls whom, and the routes a service serves, from the traces of a time window: what the
 * dashboard's service map and `iii top --service` show.
 *
 * `GET /v1/dependencies`: the edges between services drawn from client/server span pairs of the
 * newest traces of the window (at most `limit`; the answer says how many it examined and what span
 * of time they cover, so rates are per second of that span). Each server span's caller is core's
 * `SpanTree.callers` (its parent client span, or the enclosing one when the parent was not
 * captured). A client span no server span answers is a call out of the traced world, to its peer
 * address.
 *
 * `GET /v1/services/{service}/routes`: the routes the service served in its newest traces of the
 * window, each with its RED figures from the rollups (exact, not sampled).
 */
import { SpanTree, type Telemetry } from "@iii/core"
import { Effect, Either } from "effect"
import { InvalidParameter } from "../../Errors.js"
import type { SpanReaderService } from "../../Store.js"
import { parseDurationNano, parseInteger, parseTimeNano, rejectUnknown } from "./Params.js"
import { quantileOf, summarize } from "./RedSeries.js"
import { toJson } from "./TailHub.js"

type Span = Telemetry.Span

/** The route a server span's RED figures are filed under (its HTTP route, else its name). */
const routeOf = (s: Span) => s.http?.route ?? s.name

export interface Edge {
  readonly caller: string
  /** A service, or `host:port` for a call nothing traced answered. */
  readonly callee: string
  readonly external: boolean
  readonly calls: number
  readonly errors: number
  /** The caller's wait (client span), milliseconds. */
  readonly p50Ms: number
  readonly p99Ms: number
}

export interface Node {
  readonly service: string
  /** Server spans of the service in the examined traces. */
  readonly requests: number
  readonly errors: number
  /** Of those, requests no traced service made (the service is an entry point). */
  readonly entries: number
}

const quantile = (sorted: ReadonlyArray<number>, q: number) =>
  sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0)

/** Edges and nodes of a set of traces (each trace: all its spans). Pure. */
export const graphOf = (
  traces: ReadonlyArray<ReadonlyArray<Span>>
): { readonly edges: ReadonlyArray<Edge>; readonly nodes: ReadonlyArray<Node> } => {
  const edges = new Map<
    string,
    { caller: string; callee: string; external: boolean; errors: number; waits: Array<number> }
  >()
  const nodes = new Map<string, { requests: number; errors: number; entries: number }>()
  const addEdge = (caller: string, callee: string, external: boolean, waitNano: number, error: boolean) => {
    const key = `${caller}\u0000${callee}`
    let e = edges.get(key)
    if (e === undefined) {
      e = { caller, callee, external, errors: 0, waits: [] }
      edges.set(key, e)
    }
    e.waits.push(waitNano / 1e6)
    if (error) e.errors++
  }
  for (const spans of traces) {
    const callers = SpanTree.callers(spans)
    const answered = new Set(callers.values())
    for (const s of spans) {
      if (s.kind !== "server") continue
      let n = nodes.get(s.service)
      if (n === undefined) {
        n = { requests: 0, errors: 0, entries: 0 }
        nodes.set(s.service, n)
      }
      n.requests++
      if (s.error) n.errors++
      const caller = callers.get(s)
      if (caller === undefined) n.entries++
      else addEdge(caller.service, s.service, false, caller.durationNano, caller.error || s.error)
    }
    for (const c of spans)
      if (c.kind === "client" && !answered.has(c))
        addEdge(c.service, `${c.peerAddress ?? "unknown"}:${c.peerPort ?? 0}`, true, c.durationNano, c.error)
  }
  return {
    edges: Array.from(edges.values(), (e) => {
      const sorted = e.waits.sort((a, b) => a - b)
      return {
        caller: e.caller,
        callee: e.callee,
        external: e.external,
        calls: sorted.length,
        errors: e.errors,
        p50Ms: quantile(sorted, 0.5),
        p99Ms: quantile(sorted, 0.99)
      }
    }).sort((a, b) => a.caller.localeCompare(b.caller) || a.callee.localeCompare(b.callee)),
    nodes: Array.from(nodes, ([service, n]) => ({ service, ...n })).sort((a, b) =>
      a.service.localeCompare(b.service)
    )
  }
}

const fromEither = <A>(e: Either.Either<A, InvalidParameter>) =>
  Either.isLeft(e) ? Effect.fail(e.left) : Effect.succeed(e.right)

const json = (value: unknown) => ({
  status: 200,
  contentType: "application/json; charset=utf-8",
  body: toJson(value)
})

/** The newest traces (whole) with a span in [since, until), at most `limit`, and whether that was all of them. */
const newestTraces = (
  reader: SpanReaderService,
  query: { service?: string; sinceNano: bigint; untilNano: bigint; limit: number }
) =>
  Effect.gen(function* () {
    const page = yield* reader.searchTraces(query)
    const traces = yield* Effect.forEach(page.traces, (t) => reader.trace(t.traceId))
    const oldest = page.traces.reduce<bigint | undefined>(
      (min, t) => (min === undefined || t.startTimeUnixNano < min ? t.startTimeUnixNano : min),
      undefined
    )
    return { traces, complete: page.nextCursor === undefined, oldest }
  })

const limitOf = (params: URLSearchParams) => {
  const text = params.get("limit")
  return text === null ? Either.right(200) : parseInteger("limit", text, 1, 1000)
}

export const dependencies = (reader: SpanReaderService, params: URLSearchParams, nowMs: number) =>
  Effect.gen(function* () {
    yield* fromEither(rejectUnknown(params, ["since", "until", "limit"]))
    const nowNano = BigInt(nowMs) * 1_000_000n
    const sinceNano = yield* fromEither(parseTimeNano("since", params.get("since") ?? "15m", nowNano))
    const untilText = params.get("until")
    const untilNano =
      untilText === null ? nowNano : yield* fromEither(parseTimeNano("until", untilText, nowNano))
    if (sinceNano >= untilNano)
      return yield* Effect.fail(new InvalidParameter({ parameter: "since", reason: "must be before until" }))
    const limit = yield* fromEither(limitOf(params))
    const sample = yield* newestTraces(reader, { sinceNano, untilNano, limit })
    // Rates are per second of the time the examined traces cover: all of the window when they were all of it.
    const coveredFrom = sample.complete || sample.oldest === undefined ? sinceNano : sample.oldest
    const coveredSec = Math.max(1, Number(untilNano - coveredFrom) / 1e9)
    const graph = graphOf(sample.traces)
    return json({
      sinceNano,
      untilNano,
      tracesExamined: sample.traces.length,
      complete: sample.complete,
      coveredSec,
      nodes: graph.nodes.map((n) => ({ ...n, ratePerSec: n.requests / coveredSec })),
      edges: graph.edges.map((e) => ({ ...e, ratePerSec: e.calls / coveredSec }))
    })
  })

export const routes = (reader: SpanReaderService, service: string, params: URLSearchParams, nowMs: number) =>
  Effect.gen(function* () {
    yield* fromEither(rejectUnknown(params, ["window", "limit"]))
    const windowNano = yield* fromEither(parseDurationNano("window", params.get("window") ?? "5m"))
    if (windowNano < 10e9 || windowNano > 7 * 86_400e9)
      return yield* Effect.fail(
        new InvalidParameter({ parameter: "window", reason: "must be from 10s to 7d" })
      )
    const limit = yield* fromEither(limitOf(params))
    const nowSec = Math.floor(nowMs / 1000)
    const toSec = nowSec + 1
    const fromSec = toSec - Math.round(windowNano / 1e9)
    const sample = yield* newestTraces(reader, {
      service,
      sinceNano: BigInt(fromSec) * 1_000_000_000n,
      untilNano: BigInt(toSec) * 1_000_000_000n,
      limit
    })
    const names = new Set<string>()
    for (const spans of sample.traces)
      for (const s of spans) if (s.service === service && s.kind === "server") names.add(routeOf(s))
    const list = yield* Effect.forEach(Array.from(names).sort(), (route) =>
      Effect.map(reader.red(service, route, fromSec - (fromSec % 10), toSec), (cells) => {
        const sum = summarize(cells)
        return {
          route,
          requests: sum.requests,
          ratePerSec: sum.requests / (toSec - fromSec),
          errors: sum.errors,
          errorRate: sum.requests === 0 ? 0 : sum.errors / sum.requests,
          p50: quantileOf(sum, 0.5),
          p90: quantileOf(sum, 0.9),
          p99: quantileOf(sum, 0.99)
        }
      })
    )
    return json({ service, fromSec, toSec, tracesExamined: sample.traces.length, routes: list })
  })
