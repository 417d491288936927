/** Read paths of the LMDB store: trace by id, trace search, correlation, logs, RED cells, services. */
import type { Telemetry } from "@iii/core"
import {
  byStart,
  type RedCell,
  type ServiceInfo,
  type TracePage,
  type TraceQuery,
  type TraceSummary
} from "../../Store.js"
import { decodeCursor, encodeCursor, newestFirst, type Position } from "../Cursor.js"
import { routeOf } from "../RedParts.js"
import {
  allRoutes,
  blockFields,
  durationBand,
  epochOf,
  epochStart,
  groupBuckets,
  idTimeBucket,
  maxDurationBand,
  maxKeyPart,
  maxLabelBytes,
  micros,
  type ServiceBlockSpan,
  type StatusBlockSpan,
  serviceBucket,
  serviceBucketMicros,
  statusBlockFields,
  statusIndexed,
  traceIdKeyPart,
  traceIndexRange
} from "./Keys.js"
import type { Layout } from "./LmdbLayout.js"
import * as SpanRecord from "./SpanRecord.js"
import * as TraceFilter from "./TraceFilter.js"

/** Spans one search may examine per service before it returns a page and a cursor (it finishes the bucket it is in). */
export const searchScanLimit = 100_000

/** The first and the newest epoch of the trace index; undefined when it is empty. */
const epochs = (layout: Layout): readonly [number, number] | undefined => {
  for (const first of layout.traceIndex.getKeys({ limit: 1 }))
    for (const last of layout.traceIndex.getKeys({ reverse: true, limit: 1 }))
      return [epochOf(first), epochOf(last)]
  return undefined
}

/**
 * The span buckets that may hold a trace's spans: its id's own time's, then those the trace index
 * names (Keys.ts) in the id's groups of each epoch whose filter may hold the id, or
 * that has none (the current one); none for an id that is not a trace id.
 */
const traceBuckets = (layout: Layout, traceId: string): Array<number> => {
  const id = traceIdKeyPart(traceId)
  if (id === undefined) return []
  const buckets = new Set<number>([idTimeBucket(traceId)])
  const range = epochs(layout)
  if (range === undefined) return Array.from(buckets)
  const hash = TraceFilter.idHash(id)
  // Epochs that retention has deleted keep no filter here.
  for (const epoch of layout.traceFilterCache.keys())
    if (epoch < range[0]) layout.traceFilterCache.delete(epoch)
  for (let epoch = range[0]; epoch <= range[1]; epoch++) {
    const filter = filterOf(layout, epoch)
    if (filter !== undefined && !TraceFilter.mayHold(filter, hash)) continue
    for (const { value } of layout.traceIndex.getRange(traceIndexRange(epoch, hash)))
      groupBuckets(value, id, buckets)
  }
  return Array.from(buckets)
}

/** An epoch's filter, read once; undefined when it has none that decodes (it is then read whole). */
const filterOf = (layout: Layout, epoch: number): TraceFilter.TraceFilter | undefined => {
  const cached = layout.traceFilterCache.get(epoch)
  if (cached !== undefined) return cached
  const stored = layout.traceFilters.getBinary(epochStart(epoch))
  const filter = stored === undefined ? undefined : TraceFilter.decode(stored)
  if (filter !== undefined) layout.traceFilterCache.set(epoch, filter)
  return filter
}

export const readTrace = (layout: Layout, traceId: string): ReadonlyArray<Telemetry.Span> => {
  const spans: Array<Telemetry.Span> = []
  for (const bucket of traceBuckets(layout, traceId))
    for (const { key, value } of layout.spans.getRange({
      start: [bucket, traceId],
      end: [bucket, traceId, maxKeyPart]
    }))
      spans.push(SpanRecord.decode(traceId, (key as [number, string, string])[2], value))
  return spans.sort(byStart)
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

/** A span as an index block holds it, for the scan's filters. */
interface BlockSpan extends Match {
  readonly route: string
  readonly durationNano: number
  /** Undefined in the status index, whose blocks hold one status class. */
  readonly statusCode?: number
  readonly error?: 0 | 1
}

/**
 * Walks index blocks newest bucket first (Keys.ts), `blocks` being a reverse range over one prefix.
 * A bucket is finished before the walk stops, so the floor, the newest position not yet examined,
 * is just below the last bucket walked. Each trace keeps its newest match.
 */
const scanBlocks = (
  blocks: Iterable<{ key: unknown; value: ReadonlyArray<unknown> }>,
  bucketAt: number,
  fields: number,
  read: (block: ReadonlyArray<unknown>, at: number) => BlockSpan,
  q: TraceQuery,
  cursor: Position | undefined
): ScanResult => {
  const since = q.sinceNano !== undefined ? micros(q.sinceNano) : Number.NEGATIVE_INFINITY
  const until = q.untilNano !== undefined ? micros(q.untilNano) : Number.POSITIVE_INFINITY
  const newest = new Map<string, Match>()
  let scanned = 0
  let bucket: number | undefined
  for (const { key, value: block } of blocks) {
    const keyBucket = (key as ReadonlyArray<number>)[bucketAt] as number
    if (bucket !== undefined && keyBucket !== bucket && (newest.size > q.limit || scanned >= searchScanLimit))
      return {
        matches: Array.from(newest.values()),
        floor: { startMicros: bucket * serviceBucketMicros - 1, traceId: maxKeyPart, spanId: maxKeyPart }
      }
    bucket = keyBucket
    scanned += block.length / fields
    for (let at = 0; at < block.length; at += fields) {
      const span = read(block, at)
      if (
        span.startMicros >= since &&
        span.startMicros < until &&
        (cursor === undefined || newestFirst(cursor, span) < 0) &&
        (q.route === undefined || span.route === q.route) &&
        (q.minDurationNano === undefined || span.durationNano >= q.minDurationNano) &&
        (span.statusCode === undefined || statusMatches(q, span.statusCode, span.error ?? 0))
      ) {
        const known = newest.get(span.traceId)
        if (known === undefined || newestFirst(span, known) < 0)
          newest.set(span.traceId, {
            startMicros: span.startMicros,
            traceId: span.traceId,
            spanId: span.spanId,
            service: span.service
          })
      }
    }
  }
  return { matches: Array.from(newest.values()), floor: undefined }
}

/** The reverse key range of a prefix's blocks whose bucket may hold matches of the query. */
const blockRange = (prefix: ReadonlyArray<string | number>, q: TraceQuery, cursor: Position | undefined) => {
  const top = Math.min(
    q.untilNano !== undefined ? micros(q.untilNano) : Number.POSITIVE_INFINITY,
    cursor?.startMicros ?? Number.POSITIVE_INFINITY
  )
  return {
    start: [...prefix, Number.isFinite(top) ? serviceBucket(top) : maxKeyPart, maxKeyPart],
    end: [...prefix, q.sinceNano !== undefined ? serviceBucket(micros(q.sinceNano)) : -1],
    reverse: true
  }
}

const scanService = (layout: Layout, service: string, q: TraceQuery, cursor: Position | undefined) =>
  scanBlocks(
    layout.byService.getRange(blockRange([service], q, cursor)),
    1,
    blockFields,
    (block, at) => {
      const [startMicros, traceId, spanId, route, statusCode, durationNano, error] = block.slice(
        at,
        at + blockFields
      ) as unknown as ServiceBlockSpan
      return { startMicros, traceId, spanId, service, route, durationNano, statusCode, error }
    },
    q,
    cursor
  )

/** Cross-service search on a status class: one walk per duration band from the query's minimum up. */
const scanStatus = (layout: Layout, q: TraceQuery, cls: string, cursor: Position | undefined) =>
  Array.from({ length: maxDurationBand + 1 - durationBand(q.minDurationNano ?? 0) }, (_, i) =>
    scanBlocks(
      layout.byStatus.getRange(blockRange([cls, durationBand(q.minDurationNano ?? 0) + i], q, cursor)),
      2,
      statusBlockFields,
      (block, at) => {
        const [startMicros, traceId, spanId, service, route, durationNano] = block.slice(
          at,
          at + statusBlockFields
        ) as unknown as StatusBlockSpan
        return { startMicros, traceId, spanId, service, route, durationNano }
      },
      q,
      cursor
    )
  )

export const searchTraces = (layout: Layout, q: TraceQuery): TracePage => {
  const cursor = q.cursor !== undefined ? decodeCursor(q.cursor) : undefined
  const position = cursor?._tag === "Some" ? cursor.value : undefined
  const scans =
    q.service === undefined && q.status !== undefined && q.status !== "error" && statusIndexed(q.status)
      ? scanStatus(layout, q, q.status, position)
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
    matched: {
      service: matched.service,
      name: matched.name,
      spanId: matched.spanId,
      startTimeUnixNano: matched.startTimeUnixNano
    },
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
  const stored = (bucket: number) =>
    Array.from(
      layout.spans.getKeys({
        start: [bucket, correlationId],
        end: [bucket, correlationId, maxKeyPart],
        limit: 1
      })
    ).length > 0
  if (traceBuckets(layout, correlationId).some(stored)) ids.add(correlationId)
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
  // Ingest refuses labels no key can hold, so there is nothing to find (and lmdb would throw).
  if (Buffer.byteLength(service) + Buffer.byteLength(r) > maxLabelBytes) return []
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

/**
 * The newest span start stored, in unix nanoseconds to the microsecond: the last block of each
 * service's index (one key read per service, no scan); undefined when no span is stored.
 */
export const newestSpanStart = (layout: Layout): bigint | undefined => {
  let newest: number | undefined
  for (const service of layout.services.getKeys())
    for (const { value } of layout.byService.getRange({
      start: [service, maxKeyPart],
      end: [service, -1],
      reverse: true,
      limit: 1
    })) {
      const block = value as ReadonlyArray<string | number>
      for (let i = 0; i < block.length; i += blockFields) {
        const start = block[i] as number
        if (newest === undefined || start > newest) newest = start
      }
    }
  return newest === undefined ? undefined : BigInt(newest) * 1000n
}
