/**
 * The JSON query API: routes a request to a handler that reads the store and answers. Handlers are
 * Effects with no requirements (the stores are captured), failures become 400 (bad parameter) or
 * 500 (store) answers with a JSON `{ error }` body.
 */
import type { Telemetry } from "@iii/core"
import { Effect, Either } from "effect"
import { InvalidParameter, type StoreError } from "../../Errors.js"
import * as ExternalMetrics from "../../ExternalMetrics.js"
import {
  currentReadReport,
  type ReadReport,
  rollupBucketSeconds,
  type SpanReaderService
} from "../../Store.js"
import type { Answer } from "./Endpoints.js"
import { parseCorrelationId, parseInteger, parseRedQuery, parseTraceQuery, rejectUnknown } from "./Params.js"
import { bucketOf, quantileOf, series, summarize } from "./RedSeries.js"
import * as ServiceMap from "./ServiceMap.js"
import { toJson } from "./TailHub.js"

const json = (status: number, value: unknown): Answer => ({
  status,
  contentType: "application/json; charset=utf-8",
  body: toJson(value)
})

export const notFound = (what: string): Answer => json(404, { error: `${what} not found` })

const fromEither = <A>(e: Either.Either<A, InvalidParameter>) =>
  Either.isLeft(e) ? Effect.fail(e.left) : Effect.succeed(e.right)

const isHexId = (s: string, length: number) => s.length === length && /^[0-9a-f]+$/.test(s)

const withParentLinks = (spans: ReadonlyArray<Telemetry.Span>) => {
  const present = new Set(spans.map((s) => s.spanId))
  return spans.map((s) => ({
    ...s,
    // `parentMissing`: the parent span id is set but that span was not captured (yet).
    ...(s.parentSpanId !== undefined && !present.has(s.parentSpanId) && { parentMissing: true })
  }))
}

const trace = (reader: SpanReaderService, traceId: string) =>
  isHexId(traceId, 32)
    ? Effect.map(reader.trace(traceId), (spans) =>
        spans.length === 0
          ? notFound(`trace ${traceId}`)
          : json(200, { traceId, spans: withParentLinks(spans) })
      )
    : Effect.fail(
        new InvalidParameter({ parameter: "traceId", reason: "must be 32 lowercase hex characters" })
      )

const traces = (reader: SpanReaderService, params: URLSearchParams, nowMs: number) =>
  Effect.flatMap(fromEither(parseTraceQuery(params, BigInt(nowMs) * 1_000_000n)), (q) =>
    Effect.map(reader.searchTraces(q), (page) => json(200, page))
  )

/** Bucket range (unix seconds) around a set of spans, padded by a minute each side. */
const spanWindow = (spans: ReadonlyArray<Telemetry.Span>) => {
  let min = Number.POSITIVE_INFINITY
  let max = 0
  for (const s of spans) {
    const b = bucketOf(s.startTimeUnixNano)
    if (b < min) min = b
    if (b > max) max = b
  }
  return { fromSec: min - 60, toSec: max + 60 + rollupBucketSeconds }
}

const correlate = (reader: SpanReaderService, pathId: string, params: URLSearchParams) =>
  Effect.gen(function* () {
    const correlationId = yield* fromEither(parseCorrelationId(pathId))
    yield* fromEither(rejectUnknown(params, ["limit"]))
    const limitText = params.get("limit")
    const limit = limitText === null ? 20 : yield* fromEither(parseInteger("limit", limitText, 1, 100))
    const ids = yield* reader.correlatedTraceIds(correlationId, limit)
    const traceList = yield* Effect.forEach(ids, (id) =>
      Effect.map(reader.trace(id), (spans) => ({ traceId: id, spans: withParentLinks(spans) }))
    )
    const logs = yield* reader.logs(correlationId, 1000)
    const spans = traceList.flatMap((t) => t.spans)
    if (spans.length === 0 && logs.length === 0) return notFound(`correlation id ${correlationId}`)
    const { fromSec, toSec } = spanWindow(spans)
    const keys = new Map<string, { service: string; route: string }>()
    for (const s of spans)
      if (s.kind === "server") {
        const route = s.http?.route ?? s.name
        keys.set(`${s.service}\u0000${route}`, { service: s.service, route })
      }
    const red = yield* Effect.forEach(Array.from(keys.values()), ({ service, route }) =>
      Effect.map(reader.red(service, route, fromSec, toSec), (cells) => {
        const sum = summarize(cells)
        return {
          service,
          route,
          fromSec,
          toSec,
          requests: sum.requests,
          errors: sum.errors,
          errorRate: sum.requests === 0 ? 0 : sum.errors / sum.requests,
          p50: quantileOf(sum, 0.5),
          p90: quantileOf(sum, 0.9),
          p99: quantileOf(sum, 0.99)
        }
      })
    )
    return json(200, { correlationId, traces: traceList, logs, red })
  })

const services = (reader: SpanReaderService) =>
  Effect.map(reader.services(), (list) => json(200, { services: list }))

const red = (reader: SpanReaderService, service: string, params: URLSearchParams, nowMs: number) =>
  Effect.gen(function* () {
    const q = yield* fromEither(parseRedQuery(params))
    const nowSec = Math.floor(nowMs / 1000)
    // Steps count back from the end of the current rollup bucket, not from an epoch-aligned step:
    // with step = window ("the last 15m" as one total) an aligned step began at the last quarter hour.
    const toSec = nowSec - (nowSec % rollupBucketSeconds) + rollupBucketSeconds
    const fromSec = toSec - Math.ceil(q.windowSec / q.stepSec) * q.stepSec
    const cells = yield* reader.red(service, q.route, fromSec, toSec)
    return json(200, {
      service,
      ...(q.route !== undefined && { route: q.route }),
      fromSec,
      toSec,
      stepSec: q.stepSec,
      points: series(cells, fromSec, toSec, q.stepSec)
    })
  })

const externalMetric = (
  reader: SpanReaderService,
  namespace: string,
  metric: string,
  params: URLSearchParams,
  nowMs: number
) =>
  Effect.gen(function* () {
    if (!ExternalMetrics.isMetricName(metric)) return notFound(`metric ${metric}`)
    yield* fromEither(rejectUnknown(params, ["labelSelector", "metricLabelSelector"]))
    const selector = yield* fromEither(
      ExternalMetrics.parseSelector(
        params.get("labelSelector") ?? params.get("metricLabelSelector") ?? undefined
      )
    )
    const matched = ExternalMetrics.matchServices(yield* reader.services(), namespace, selector)
    const now = new Date(nowMs)
    const nowSec = Math.floor(now.getTime() / 1000)
    const current = nowSec - (nowSec % rollupBucketSeconds)
    const fromSec = current - ExternalMetrics.windowSeconds + rollupBucketSeconds
    const cells = (yield* Effect.forEach(matched, (s) =>
      reader.red(s.service, undefined, fromSec, current + 1)
    )).flat()
    const sum = summarize(cells)
    const figures: ExternalMetrics.WindowFigures = {
      requests: sum.requests,
      errors: sum.errors,
      seconds: Math.max(1, nowSec - fromSec),
      quantile: (q) => quantileOf(sum, q)
    }
    return json(200, ExternalMetrics.render(metric, selector, matched.length, figures, now))
  })

/**
 * An answer with what its reads could not reach: `partial` (data may be missing) and `missing` (the
 * nodes that did not answer) added to a JSON object's fields, or, for the Kubernetes APIs, whose
 * bodies have a fixed shape, as `X-III-Partial` and `X-III-Missing` headers.
 */
const withReport = (answer: Answer, report: ReadReport, apiGroup: boolean): Answer => {
  if (report.missing.size === 0 && !report.partial) return answer
  const missing = Array.from(report.missing).sort()
  if (apiGroup || !answer.body.startsWith("{"))
    return {
      ...answer,
      headers: {
        ...answer.headers,
        "x-iii-partial": String(report.partial),
        "x-iii-missing": missing.join(",")
      }
    }
  const fields = `"partial":${report.partial},"missing":${JSON.stringify(missing)}`
  return { ...answer, body: `{${fields}${answer.body === "{}" ? "" : ","}${answer.body.slice(1)}` }
}

/** Routes `GET` requests of the query API; undefined when the path is not one of ours. `nowMs`: the node's clock. */
export const route = (
  reader: SpanReaderService,
  url: URL,
  nowMs: number
): Effect.Effect<Answer, InvalidParameter | StoreError> | undefined => {
  const answer = routeReads(reader, url, nowMs)
  if (answer === undefined) return undefined
  return Effect.suspend(() => {
    const report: ReadReport = { partial: false, missing: new Set() }
    return answer.pipe(
      Effect.locally(currentReadReport, report),
      Effect.map((a) => withReport(a, report, url.pathname.startsWith("/apis/")))
    )
  })
}

const routeReads = (
  reader: SpanReaderService,
  url: URL,
  nowMs: number
): Effect.Effect<Answer, InvalidParameter | StoreError> | undefined => {
  let parts: Array<string>
  try {
    parts = url.pathname
      .split("/")
      .filter((p) => p.length > 0)
      .map(decodeURIComponent)
  } catch {
    return Effect.fail(new InvalidParameter({ parameter: "path", reason: "not valid percent-encoding" }))
  }
  const p = url.searchParams
  const [a, b, c, d, e, f] = parts
  if (a === "v1") {
    if (b === "traces" && c === undefined) return traces(reader, p, nowMs)
    if (b === "traces" && c !== undefined && d === undefined) return trace(reader, c)
    if (b === "correlate" && c !== undefined && d === undefined) return correlate(reader, c, p)
    if (b === "services" && c === undefined) return services(reader)
    if (b === "services" && c !== undefined && d === "red" && e === undefined) return red(reader, c, p, nowMs)
    if (b === "services" && c !== undefined && d === "routes" && e === undefined)
      return ServiceMap.routes(reader, c, p, nowMs)
    if (b === "dependencies" && c === undefined) return ServiceMap.dependencies(reader, p, nowMs)
    return undefined
  }
  if (a === "apis" && b === ExternalMetrics.group) {
    if (c === undefined) return Effect.succeed(json(200, ExternalMetrics.apiGroup()))
    if (c !== ExternalMetrics.version) return undefined
    if (d === undefined) return Effect.succeed(json(200, ExternalMetrics.apiResourceList()))
    if (d === "namespaces" && e !== undefined && f !== undefined && parts.length === 6)
      return externalMetric(reader, e, f, p, nowMs)
  }
  return undefined
}

export const errorAnswer = (e: InvalidParameter | StoreError): Answer =>
  e._tag === "InvalidParameter"
    ? json(400, { error: e.message, parameter: e.parameter })
    : json(500, { error: "store failure; see the node's log" })
