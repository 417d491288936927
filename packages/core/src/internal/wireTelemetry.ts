/**
 * Spans, metric points and log records as positional msgpack arrays ("tuples"), written with the
 * `Msgpack.Writer` and read from msgpackr's decoding, both directions side by side so the layout has
 * one source of truth. README.md ("Wire protocol") documents the layout.
 *
 * Ids travel as raw bytes in one binary blob per batch (spans: trace 16 + span 8 + parent 8 bytes;
 * logs: trace 16 + span 8), all-zero meaning "absent" (an all-zero id is invalid anyway). One blob
 * instead of three small binaries per span saves allocations on both sides and half the id bytes
 * of hex strings. A span whose correlation id equals its trace id (the common case) sends nil.
 */

import type { Writer } from "../Msgpack.js"
import type {
  LogLevel,
  LogRecord,
  MetricKind,
  MetricPoint,
  SketchData,
  Span,
  SpanEvent,
  SpanId,
  SpanKind,
  SpanLink,
  TraceId
} from "../Telemetry.js"
import * as Check from "./wireChecks.js"

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

const spanKinds: ReadonlyArray<SpanKind> = ["server", "client", "internal", "producer", "consumer"]
const metricKinds: ReadonlyArray<MetricKind> = ["counter", "gauge", "distribution"]
const logLevels: ReadonlyArray<LogLevel> = ["trace", "debug", "info", "warn", "error", "fatal"]
const streams = ["stdout", "stderr"] as const

export const SPAN_ID_BYTES = 32
export const LOG_ID_BYTES = 24
// An absent id travels as zeros (an all-zero id is invalid anyway).
const ZERO_SPAN_ID = "0000000000000000"
const ZERO_TRACE_ID = "00000000000000000000000000000000"

// ---------------------------------------------------------------------------------------------------
// ids: written from hex; ids that are not hex of the right length throw a `TypeError` naming the
// field (a programming error: the types promise them), found only on that path, not checked per id

const badId = (path: string, value: unknown, hexLength: number): never => {
  throw new TypeError(
    `encodeFrame: ${path} must be ${hexLength} hex characters, got ${JSON.stringify(value)}`
  )
}

const checkIds = (ids: ReadonlyArray<readonly [string, unknown, number]>): void => {
  for (const [path, value, length] of ids)
    if (typeof value !== "string" || !/^[0-9a-fA-F]*$/.test(value) || value.length !== length)
      badId(path, value, length)
}

const checkSpanIds = (s: Span, index: number): void =>
  checkIds([
    [`spans[${index}].traceId`, s.traceId, 32],
    [`spans[${index}].spanId`, s.spanId, 16],
    [`spans[${index}].parentSpanId`, s.parentSpanId ?? ZERO_SPAN_ID, 16]
  ])

const checkLogIds = (l: LogRecord, index: number): void =>
  checkIds([
    [`logs[${index}].traceId`, l.traceId ?? ZERO_TRACE_ID, 32],
    [`logs[${index}].spanId`, l.spanId ?? ZERO_SPAN_ID, 16]
  ])

/** Called when ids failed to write: finds the bad one and throws naming it. */
const badIds = <A>(items: ReadonlyArray<A>, check: (item: A, index: number) => void): never => {
  items.forEach(check)
  throw new TypeError("encodeFrame: malformed id")
}

/** Appends the `index`th span's ids to a batch's id blob (a sender adding spans one by one). */
export const writeSpanIds = (w: Writer, s: Span, index: number): void => {
  const at = w.position
  if (w.hex(s.traceId, 16) && w.hex(s.spanId, 8) && w.hex(s.parentSpanId ?? ZERO_SPAN_ID, 8)) return
  w.position = at
  badIds([s], (span) => checkSpanIds(span, index))
}

/** Appends the `index`th log record's ids to a batch's id blob. */
export const writeLogIds = (w: Writer, l: LogRecord, index: number): void => {
  const at = w.position
  if (w.hex(l.traceId ?? ZERO_TRACE_ID, 16) && w.hex(l.spanId ?? ZERO_SPAN_ID, 8)) return
  w.position = at
  badIds([l], (log) => checkLogIds(log, index))
}

/** The whole id blob of a batch's spans: as hex joined first, one decoding is faster than one per id. */
export const writeSpanIdBlob = (w: Writer, spans: ReadonlyArray<Span>): void => {
  let hex = ""
  for (let i = 0; i < spans.length; i++) {
    const s = spans[i] as Span
    const parent = s.parentSpanId ?? ZERO_SPAN_ID
    // Lengths first: a short id would shift every id after it.
    if (s.traceId.length !== 32 || s.spanId.length !== 16 || parent.length !== 16) checkSpanIds(s, i)
    hex += s.traceId + s.spanId + parent
  }
  w.binHeader(spans.length * SPAN_ID_BYTES)
  if (!w.hex(hex, spans.length * SPAN_ID_BYTES)) badIds(spans, checkSpanIds)
}

/** The whole id blob of a batch's log records, as `writeSpanIdBlob` does. */
export const writeLogIdBlob = (w: Writer, logs: ReadonlyArray<LogRecord>): void => {
  let hex = ""
  for (let i = 0; i < logs.length; i++) {
    const l = logs[i] as LogRecord
    const traceId = l.traceId ?? ZERO_TRACE_ID
    const spanId = l.spanId ?? ZERO_SPAN_ID
    if (traceId.length !== 32 || spanId.length !== 16) checkLogIds(l, i)
    hex += traceId + spanId
  }
  w.binHeader(logs.length * LOG_ID_BYTES)
  if (!w.hex(hex, logs.length * LOG_ID_BYTES)) badIds(logs, checkLogIds)
}

const isZero = (blob: Uint8Array, from: number, length: number): boolean => {
  for (let i = from; i < from + length; i++) if (blob[i] !== 0) return false
  return true
}

/** The blob as one hex string; ids are slices of it. */
const blobHex = (blob: Uint8Array, expectedBytes: number, path: string, what: string): string => {
  if (blob.length !== expectedBytes)
    Check.fail("invalid_batch", path, `expected ${expectedBytes} bytes (${what}), got ${blob.length}`)
  return Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength).toString("hex")
}

// ---------------------------------------------------------------------------------------------------
// resource fields (service, component, composition, namespace, pod), shared by all three

type Resource = Pick<Span, "service" | "component" | "composition" | "namespace" | "pod">

const writeResource = (w: Writer, r: Resource): void => {
  w.string(r.service)
  w.optionalString(r.component)
  w.optionalString(r.composition)
  w.optionalString(r.namespace)
  w.optionalString(r.pod)
}

const NAMES = ["service", "component", "composition", "namespace", "pod"] as const

/** Decodes the five resource fields starting at `t[at]` into `into`. */
const readResource = (t: ReadonlyArray<unknown>, at: number, into: Mutable<Resource>): void => {
  into.service = Check.string(t[at], "invalid_batch", NAMES[0])
  for (let k = 1; k < 5; k++) {
    const v = t[at + k]
    if (v !== null) into[NAMES[k] as "component"] = Check.string(v, "invalid_batch", NAMES[k] as string)
  }
}

// ---------------------------------------------------------------------------------------------------
// spans: [correlationId|nil, service, component, composition, namespace, pod, kind, name,
//         startTimeUnixNano, durationNano, http|nil, peerAddress|nil, peerPort|nil, error, attributes|nil,
//         then, only when one of them is set: status|nil, events|nil, links|nil]
//         http: [method, route, path|nil, statusCode|nil]
//         status: [code (1 ok, 2 error), message|nil]; event: [timeUnixNano, name, attributes|nil];
//         link: [traceId (bin 16), spanId (bin 8), attributes|nil]

const SPAN_FIELDS = 15

/** The OpenTelemetry parts of a span (status, events, links), written only when it has one. */
const writeOtelTail = (w: Writer, s: Span): void => {
  const status = s.status
  if (status === undefined) w.nil()
  else {
    w.arrayHeader(2)
    w.number(status.code === "ok" ? 1 : 2)
    w.optionalString(status.message)
  }
  if (s.events === undefined) w.nil()
  else {
    w.arrayHeader(s.events.length)
    for (const e of s.events) {
      w.arrayHeader(3)
      w.bigint(e.timeUnixNano)
      w.string(e.name)
      w.optionalScalarMap(e.attributes)
    }
  }
  if (s.links === undefined) w.nil()
  else {
    w.arrayHeader(s.links.length)
    s.links.forEach((l, i) => {
      w.arrayHeader(3)
      writeLinkId(w, l.traceId, 16, `links[${i}].traceId`)
      writeLinkId(w, l.spanId, 8, `links[${i}].spanId`)
      w.optionalScalarMap(l.attributes)
    })
  }
}

const writeLinkId = (w: Writer, hex: string, bytes: number, path: string): void => {
  w.binHeader(bytes)
  if (!w.hex(hex, bytes)) badId(path, hex, bytes * 2)
}

const decodeStatus = (v: unknown): NonNullable<Span["status"]> => {
  const t = Check.tuple(v, 2, "invalid_batch", "status")
  const code =
    t[0] === 1
      ? "ok"
      : t[0] === 2
        ? "error"
        : Check.fail("invalid_batch", "status.code", `expected 1 or 2, got ${String(t[0])}`)
  const message = Check.optionalString(t[1], "invalid_batch", "status.message")
  return message === undefined ? { code } : { code, message }
}

const decodeEvents = (v: unknown): NonNullable<Span["events"]> =>
  Check.array(v, "invalid_batch", "events").map((e, i) => {
    const t = Check.tuple(e, 3, "invalid_batch", `events[${i}]`)
    const event: Mutable<SpanEvent> = {
      timeUnixNano: Check.unixNano(t[0], "invalid_batch", `events[${i}].timeUnixNano`),
      name: Check.string(t[1], "invalid_batch", `events[${i}].name`)
    }
    const attributes = Check.attributes(t[2], "invalid_batch", `events[${i}].attributes`)
    if (attributes !== undefined) event.attributes = attributes
    return event
  })

const linkId = (v: unknown, bytes: number, path: string): string => {
  const b = Check.bytes(v, "invalid_batch", path)
  if (b.length !== bytes) Check.fail("invalid_batch", path, `expected ${bytes} bytes, got ${b.length}`)
  if (isZero(b, 0, bytes)) Check.fail("invalid_batch", path, "must not be all zeros")
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex")
}

const decodeLinks = (v: unknown): NonNullable<Span["links"]> =>
  Check.array(v, "invalid_batch", "links").map((l, i) => {
    const t = Check.tuple(l, 3, "invalid_batch", `links[${i}]`)
    const link: Mutable<SpanLink> = {
      traceId: linkId(t[0], 16, `links[${i}].traceId`) as TraceId,
      spanId: linkId(t[1], 8, `links[${i}].spanId`) as SpanId
    }
    const attributes = Check.attributes(t[2], "invalid_batch", `links[${i}].attributes`)
    if (attributes !== undefined) link.attributes = attributes
    return link
  })

const hasOtelTail = (s: Span): boolean =>
  s.status !== undefined || s.events !== undefined || s.links !== undefined

/** The length of a span's array: the OpenTelemetry tail only when present, so spans without it (every
 * agent span) cost nothing more. */
export const spanFieldCount = (s: Span): number => (hasOtelTail(s) ? SPAN_FIELDS + 3 : SPAN_FIELDS)

/** A span's fields in the wire's order, after its array header (obs stores them alike, after the parent). */
export const writeSpanFields = (w: Writer, s: Span): void => {
  if (s.correlationId === s.traceId) w.nil()
  else w.string(s.correlationId)
  writeResource(w, s)
  w.number(s.kind === "server" ? 0 : s.kind === "client" ? 1 : spanKinds.indexOf(s.kind))
  w.string(s.name)
  w.bigint(s.startTimeUnixNano)
  w.number(s.durationNano)
  const h = s.http
  if (h === undefined) w.nil()
  else {
    w.arrayHeader(4)
    w.string(h.method)
    w.string(h.route)
    w.optionalString(h.path)
    w.optionalNumber(h.statusCode)
  }
  w.optionalString(s.peerAddress)
  w.optionalNumber(s.peerPort)
  w.boolean(s.error)
  w.optionalScalarMap(s.attributes)
  if (hasOtelTail(s)) writeOtelTail(w, s)
}

export const writeSpan = (w: Writer, s: Span): void => {
  w.arrayHeader(spanFieldCount(s))
  writeSpanFields(w, s)
}

const decodeSpan = (v: unknown, ids: string, blob: Uint8Array, i: number): Span => {
  const t = Check.tuple(v, SPAN_FIELDS, "invalid_batch", "")
  const o = i * SPAN_ID_BYTES
  if (isZero(blob, o, 16)) Check.fail("invalid_batch", "traceId", "must not be all zeros")
  if (isZero(blob, o + 16, 8)) Check.fail("invalid_batch", "spanId", "must not be all zeros")
  const h = o * 2
  const traceId = ids.slice(h, h + 32) as TraceId
  const span = { traceId, spanId: ids.slice(h + 32, h + 48) as SpanId } as Mutable<Span>
  if (!isZero(blob, o + 24, 8)) span.parentSpanId = ids.slice(h + 48, h + 64) as SpanId
  span.correlationId =
    t[0] === null ? traceId : Check.boundedString(t[0], 1, 256, "invalid_batch", "correlationId")
  readResource(t, 1, span)
  span.kind = Check.literal(t[6], spanKinds, "invalid_batch", "kind")
  span.name = Check.string(t[7], "invalid_batch", "name")
  span.startTimeUnixNano = Check.unixNano(t[8], "invalid_batch", "startTimeUnixNano")
  span.durationNano = Check.nonNegativeInteger(t[9], "invalid_batch", "durationNano")
  if (t[10] !== null) {
    const ht = Check.tuple(t[10], 4, "invalid_batch", "http")
    const http: Mutable<NonNullable<Span["http"]>> = {
      method: Check.string(ht[0], "invalid_batch", "http.method"),
      route: Check.string(ht[1], "invalid_batch", "http.route")
    }
    const path = Check.optionalString(ht[2], "invalid_batch", "http.path")
    if (path !== undefined) http.path = path
    const status = Check.optionalNonNegativeInteger(ht[3], "invalid_batch", "http.statusCode")
    if (status !== undefined) http.statusCode = status
    span.http = http
  }
  const peerAddress = Check.optionalString(t[11], "invalid_batch", "peerAddress")
  if (peerAddress !== undefined) span.peerAddress = peerAddress
  const peerPort = Check.optionalNonNegativeInteger(t[12], "invalid_batch", "peerPort")
  if (peerPort !== undefined) span.peerPort = peerPort
  span.error = Check.boolean(t[13], "invalid_batch", "error")
  const attributes = Check.attributes(t[14], "invalid_batch", "attributes")
  if (attributes !== undefined) span.attributes = attributes
  if (t.length > SPAN_FIELDS) {
    if (t[15] !== null && t[15] !== undefined) span.status = decodeStatus(t[15])
    if (t[16] !== null && t[16] !== undefined) span.events = decodeEvents(t[16])
    if (t[17] !== null && t[17] !== undefined) span.links = decodeLinks(t[17])
  }
  return span
}

export const decodeSpans = (tuples: unknown, idsBlob: unknown): Array<Span> => {
  const list = Check.array(tuples, "invalid_batch", "spans")
  const blob = Check.bytes(idsBlob, "invalid_batch", "spanIds")
  const ids = blobHex(blob, list.length * SPAN_ID_BYTES, "spanIds", `${SPAN_ID_BYTES} per span`)
  const out = new Array<Span>(list.length)
  for (let i = 0; i < list.length; i++) {
    try {
      out[i] = decodeSpan(list[i], ids, blob, i)
    } catch (e) {
      Check.rethrowWithin(e, `spans[${i}]`)
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------------
// metric points: [name, kind, service, component, composition, namespace, pod, timeUnixNano,
//                 intervalNano, value, sketch|nil, attributes|nil]
//                 sketch: [count, sum, zeroCount, offset, counts[]]

const METRIC_FIELDS = 12

export const writeMetric = (w: Writer, m: MetricPoint): void => {
  w.arrayHeader(METRIC_FIELDS)
  w.string(m.name)
  w.number(metricKinds.indexOf(m.kind))
  writeResource(w, m)
  w.bigint(m.timeUnixNano)
  w.number(m.intervalNano)
  w.number(m.value)
  const k = m.sketch
  if (k === undefined) w.nil()
  else {
    w.arrayHeader(5)
    w.number(k.count)
    w.number(k.sum)
    w.number(k.zeroCount)
    w.number(k.offset)
    w.arrayHeader(k.counts.length)
    for (let i = 0; i < k.counts.length; i++) w.number(k.counts[i] as number)
  }
  w.optionalScalarMap(m.attributes)
}

const decodeSketch = (v: unknown): SketchData => {
  const t = Check.tuple(v, 5, "invalid_batch", "sketch")
  const counts = Check.array(t[4], "invalid_batch", "sketch.counts")
  const out = new Array<number>(counts.length)
  for (let i = 0; i < counts.length; i++)
    out[i] = Check.nonNegativeInteger(counts[i], "invalid_batch", `sketch.counts[${i}]`)
  return {
    count: Check.nonNegativeInteger(t[0], "invalid_batch", "sketch.count"),
    sum: Check.number(t[1], "invalid_batch", "sketch.sum"),
    zeroCount: Check.nonNegativeInteger(t[2], "invalid_batch", "sketch.zeroCount"),
    offset: Check.integer(t[3], "invalid_batch", "sketch.offset"),
    counts: out
  }
}

const decodeMetric = (v: unknown): MetricPoint => {
  const t = Check.tuple(v, METRIC_FIELDS, "invalid_batch", "")
  const name = Check.nonEmptyString(t[0], "invalid_batch", "name")
  const point = {
    name,
    kind: Check.literal(t[1], metricKinds, "invalid_batch", "kind")
  } as Mutable<MetricPoint>
  readResource(t, 2, point)
  point.timeUnixNano = Check.unixNano(t[7], "invalid_batch", "timeUnixNano")
  point.intervalNano = Check.nonNegativeInteger(t[8], "invalid_batch", "intervalNano")
  point.value = Check.number(t[9], "invalid_batch", "value")
  if (t[10] !== null) point.sketch = decodeSketch(t[10])
  const attributes = Check.attributes(t[11], "invalid_batch", "attributes")
  if (attributes !== undefined) point.attributes = attributes
  return point
}

export const decodeMetrics = (tuples: unknown): Array<MetricPoint> => {
  const list = Check.array(tuples, "invalid_batch", "metrics")
  const out = new Array<MetricPoint>(list.length)
  for (let i = 0; i < list.length; i++) {
    try {
      out[i] = decodeMetric(list[i])
    } catch (e) {
      Check.rethrowWithin(e, `metrics[${i}]`)
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------------
// log records: [timeUnixNano, service, component, composition, namespace, pod, level, body,
//               stream|nil, correlationId|nil, attributes|nil]

const LOG_FIELDS = 11

export const writeLog = (w: Writer, l: LogRecord): void => {
  w.arrayHeader(LOG_FIELDS)
  w.bigint(l.timeUnixNano)
  writeResource(w, l)
  w.number(logLevels.indexOf(l.level))
  w.string(l.body)
  if (l.stream === undefined) w.nil()
  else w.number(l.stream === "stdout" ? 0 : 1)
  w.optionalString(l.correlationId)
  w.optionalScalarMap(l.attributes)
}

const decodeLog = (v: unknown, ids: string, blob: Uint8Array, i: number): LogRecord => {
  const t = Check.tuple(v, LOG_FIELDS, "invalid_batch", "")
  const log = { timeUnixNano: Check.unixNano(t[0], "invalid_batch", "timeUnixNano") } as Mutable<LogRecord>
  readResource(t, 1, log)
  log.level = Check.literal(t[6], logLevels, "invalid_batch", "level")
  log.body = Check.string(t[7], "invalid_batch", "body")
  if (t[8] !== null) log.stream = Check.literal(t[8], streams, "invalid_batch", "stream")
  const o = i * LOG_ID_BYTES
  if (!isZero(blob, o, 16)) log.traceId = ids.slice(o * 2, o * 2 + 32) as TraceId
  if (!isZero(blob, o + 16, 8)) log.spanId = ids.slice(o * 2 + 32, o * 2 + 48) as SpanId
  const correlationId = Check.optionalString(t[9], "invalid_batch", "correlationId")
  if (correlationId !== undefined) log.correlationId = correlationId
  const attributes = Check.attributes(t[10], "invalid_batch", "attributes")
  if (attributes !== undefined) log.attributes = attributes
  return log
}

export const decodeLogs = (tuples: unknown, idsBlob: unknown): Array<LogRecord> => {
  const list = Check.array(tuples, "invalid_batch", "logs")
  const blob = Check.bytes(idsBlob, "invalid_batch", "logIds")
  const ids = blobHex(blob, list.length * LOG_ID_BYTES, "logIds", `${LOG_ID_BYTES} per log record`)
  const out = new Array<LogRecord>(list.length)
  for (let i = 0; i < list.length; i++) {
    try {
      out[i] = decodeLog(list[i], ids, blob, i)
    } catch (e) {
      Check.rethrowWithin(e, `logs[${i}]`)
    }
  }
  return out
}
