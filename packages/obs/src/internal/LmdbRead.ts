/** Read paths of the LMDB store: trace by id, trace search, correlation, logs, RED cells, services. */
import type { Telemetry } from "@iii/core"
import type { RedCell, ServiceInfo, TracePage, TraceQuery, TraceSummary } from "../Store.js"
import { decodeCursor, encodeCursor, newestFirst, type Position } from "./Cursor.js"
import {
  allRoutes,
  blockFields,
  maxKeyPart,
  micros,
  routeOf,
  type ServiceBlockKey,
  type ServiceBlockSpan,
  type ServiceBlockValue,
  serviceBucket,
  serviceBucketMicros,
  statusIndexed
} from "./Keys.js"
import type { Layout } from "./LmdbLayout.js"
import * as SpanRecord from "./SpanRecord.js"

/** Spans one search may examine per service before it returns a page and a cursor (it finishes the bucket it is in). */
export const searchScanLimit = 100_000

export const readTrace = (layout: Layout, traceId: string): ReadonlyArray<Telemetry.Span> => {
  const spans = Array.from(layout.spans.getRange({ start: [traceId], end: [traceId, maxKeyPart] }), (e) =>
    SpanRecord.decode(traceId, (e.key as [string, string])[1], e.value)
  )
  return spans.sort((a, b) =>
    a.startTimeUnixNano < b.startTimeUnixNano
      ? -1
      : a.startTimeUnixNano > b.startTimeUnixNano
        ? 1
        : a.spanId < b.spanId
          ? -1
          : 1
  )
}

interface Match extends Position {
  readonly service: string
}

interface ScanResult {
  readonly matches: ReadonlyArray<Match>
  /** Where the scan stopped before exhausting its range; undefined when exhausted. */
  readonly floor: Position | undefined
}

const statusMatches = (q: TraceQuery, statusCode: number, error: 0 | 1): boolean => {
  if (q.status === undefined) return true
  if (q.status === "error") return error === 1
  if (q.status === "none") return statusCode < 100 || statusCode > 599
  return Math.floor(statusCode / 100) === Number(q.status[0]) && statusCode >= 100 && statusCode <= 599
}

/**
 * Walks a service's blocks newest bucket first (Keys.ts). A bucket is finished before the walk stops,
 * so the floor, the newest position not yet examined, is just below the last bucket walked.
 */
const scanService = (
  layout: Layout,
  service: string,
  q: TraceQuery,
  cursor: Position | undefined
): ScanResult => {
  const since = q.sinceNano !== undefined ? micros(q.sinceNano) : Number.NEGATIVE_INFINITY
  const until = q.untilNano !== undefined ? micros(q.untilNano) : Number.POSITIVE_INFINITY
  const top = Math.min(until, cursor?.startMicros ?? Number.POSITIVE_INFINITY)
  const newest = new Map<string, Match>()
  let scanned = 0
  let bucket: number | undefined
  for (const { key, value } of layout.byService.getRange({
    start: [service, Number.isFinite(top) ? serviceBucket(top) : maxKeyPart, maxKeyPart],
    end: [service, Number.isFinite(since) ? serviceBucket(since) : -1],
    reverse: true
  })) {
    const keyBucket = (key as ServiceBlockKey)[1]
    if (bucket !== undefined && keyBucket !== bucket && (newest.size > q.limit || scanned >= searchScanLimit))
      return {
        matches: Array.from(newest.values()),
        floor: { startMicros: bucket * serviceBucketMicros - 1, traceId: maxKeyPart, spanId: maxKeyPart }
      }
    bucket = keyBucket
    const block = value as ServiceBlockValue
    scanned += block.length / blockFields
    for (let at = 0; at < block.length; at += blockFields) {
      const [startMicros, traceId, spanId, route, statusCode, durationNano, error] = block.slice(
        at,
        at + blockFields
      ) as unknown as ServiceBlockSpan
      const position = { startMicros, traceId, spanId }
      if (
        startMicros >= since &&
        startMicros < until &&
        (cursor === undefined || newestFirst(cursor, position) < 0) &&
        (q.route === undefined || route === q.route) &&
        (q.minDurationNano === undefined || durationNano >= q.minDurationNano) &&
        statusMatches(q, statusCode, error)
      ) {
        const known = newest.get(traceId)
        if (known === undefined || newestFirst(position, known) < 0)
          newest.set(traceId, { ...position, service })
      }
    }
  }
  return { matches: Array.from(newest.values()), floor: undefined }
}

/** Cross-service search on a status class: walks the (status class, duration) index from minDuration up. */
const scanStatus = (layout: Layout, q: TraceQuery, cls: string, cursor: Position | undefined): ScanResult => {
  const since = q.sinceNano !== undefined ? micros(q.sinceNano) : Number.NEGATIVE_INFINITY
  const until = q.untilNano !== undefined ? micros(q.untilNano) : Number.POSITIVE_INFINITY
  const found: Array<Match> = []
  let scanned = 0
  for (const { key, value } of layout.byStatus.getRange({
    start: [cls, q.minDurationNano ?? -1],
    end: [cls, maxKeyPart]
  })) {
    const [, , startMicros, traceId, spanId] = key as [string, number, number, string, string]
    const [service, route] = value as [string, string]
    if (++scanned > searchScanLimit * 2) break
    const position = { startMicros, traceId, spanId }
    if (
      startMicros >= since &&
      startMicros < until &&
      (q.route === undefined || route === q.route) &&
      (cursor === undefined || newestFirst(cursor, position) < 0)
    )
      found.push({ ...position, service })
  }
  found.sort(newestFirst)
  return { matches: found, floor: undefined }
}

export const searchTraces = (layout: Layout, q: TraceQuery): TracePage => {
  const cursor = q.cursor !== undefined ? decodeCursor(q.cursor) : undefined
  const position = cursor?._tag === "Some" ? cursor.value : undefined
  const scans =
    q.service === undefined && q.status !== undefined && q.status !== "error" && statusIndexed(q.status)
      ? [scanStatus(layout, q, q.status, position)]
      : (q.service !== undefined ? [q.service] : Array.from(layout.services.getKeys())).map((service) =>
          scanService(layout, service, q, position)
        )
  // Everything newer than the newest unfinished scan's floor is complete; older matches wait for the next page.
  const floors = scans.flatMap((s) => (s.floor === undefined ? [] : [s.floor])).sort(newestFirst)
  const boundary = floors[0]
  const seen = new Set<string>()
  const candidates = scans
    .flatMap((s) => s.matches)
    .filter((m) => boundary === undefined || newestFirst(m, boundary) <= 0)
    .sort(newestFirst)
    .filter((m) => !seen.has(m.traceId) && seen.add(m.traceId) !== undefined)
  const page = candidates.slice(0, q.limit)
  const last = page[page.length - 1]
  const next = candidates.length > q.limit ? last : boundary
  const traces = page.flatMap((m) => {
    const spans = readTrace(layout, m.traceId)
    // A trace is listed once, at its newest match: one that also matches at or before the cursor was
    // on an earlier page.
    if (
      position !== undefined &&
      spans.some((s) => spanMatches(q, s) && newestFirst(positionOf(s), position) <= 0)
    )
      return []
    const summary = summarize(m, spans)
    return summary === undefined ? [] : [summary]
  })
  return next === undefined ? { traces } : { traces, nextCursor: encodeCursor(next) }
}

const positionOf = (s: Telemetry.Span): Position => ({
  startMicros: micros(s.startTimeUnixNano),
  traceId: s.traceId,
  spanId: s.spanId
})

/** The query's filters applied to a stored span, as the index scans apply them. */
const spanMatches = (q: TraceQuery, s: Telemetry.Span): boolean =>
  (q.service === undefined || s.service === q.service) &&
  (q.route === undefined || routeOf(s) === q.route) &&
  (q.minDurationNano === undefined || s.durationNano >= q.minDurationNano) &&
  (q.sinceNano === undefined || micros(s.startTimeUnixNano) >= micros(q.sinceNano)) &&
  (q.untilNano === undefined || micros(s.startTimeUnixNano) < micros(q.untilNano)) &&
  statusMatches(q, s.http?.statusCode ?? 0, s.error ? 1 : 0)

const summarize = (match: Match, spans: ReadonlyArray<Telemetry.Span>): TraceSummary | undefined => {
  const first = spans[0]
  const matched = spans.find((s) => s.spanId === match.spanId)
  if (first === undefined || matched === undefined) return undefined
  const ids = new Set(spans.map((s) => s.spanId))
  const root = spans.find((s) => s.parentSpanId === undefined || !ids.has(s.parentSpanId)) ?? first
  let end = 0n
  for (const s of spans) {
    const e = s.startTimeUnixNano + BigInt(s.durationNano)
    if (e > end) end = e
  }
  return {
    traceId: first.traceId,
    correlationId: root.correlationId,
    matched: { service: matched.service, name: matched.name, spanId: matched.spanId },
    rootService: root.service,
    rootName: root.name,
    startTimeUnixNano: first.startTimeUnixNano,
    durationNano: Number(end - first.startTimeUnixNano),
    spanCount: spans.length,
    errorCount: spans.filter((s) => s.error).length,
    services: Array.from(new Set(spans.map((s) => s.service))).sort()
  }
}

export const correlatedTraceIds = (
  layout: Layout,
  correlationId: string,
  limit: number
): ReadonlyArray<string> => {
  const ids = new Set<string>()
  // A trace id correlates its own trace (spans whose correlation id is their trace id are not indexed).
  const own = Array.from(
    layout.spans.getKeys({ start: [correlationId], end: [correlationId, maxKeyPart], limit: 1 })
  )
  if (own.length > 0) ids.add(correlationId)
  for (const key of layout.byCorrelation.getKeys({
    start: [correlationId, maxKeyPart],
    end: [correlationId],
    reverse: true
  })) {
    if (ids.size >= limit) break
    ids.add((key as [string, number, string])[2])
  }
  return Array.from(ids)
}

export const readLogs = (
  layout: Layout,
  correlationId: string,
  limit: number
): ReadonlyArray<Telemetry.LogRecord> =>
  Array.from(
    layout.logs.getRange({ start: [correlationId], end: [correlationId, maxKeyPart], limit }),
    (e) => e.value
  )

export const readRed = (
  layout: Layout,
  service: string,
  route: string | undefined,
  fromSec: number,
  toSec: number
): ReadonlyArray<RedCell> => {
  const r = route ?? allRoutes
  return Array.from(layout.red.getRange({ start: [service, r, fromSec], end: [service, r, toSec] }), (e) => ({
    bucketStartSec: (e.key as [string, string, number])[2],
    route: r,
    count: e.value.count,
    errors: e.value.errors,
    sketch: e.value.sketch
  }))
}

export const readServices = (layout: Layout): ReadonlyArray<ServiceInfo> =>
  Array.from(layout.services.getRange(), ({ key, value }) => ({ service: key, ...value }))
