/**
 * How a span is stored in the `spans` database: a positional MessagePack array, without the trace
 * and span ids (the key holds them), in the wire's field order (core README, "Wire protocol") after
 * the parent id. Written on the ingest thread as plain bytes, so the writer thread copies bytes into
 * LMDB instead of encoding objects; decoded by the read paths.
 *
 * [parentSpanId|nil, correlationId|nil (= traceId), service, component|nil, composition|nil,
 *  namespace|nil, pod|nil, kind (0 server, 1 client), name, startTimeUnixNano, durationNano,
 *  http [method, route, path|nil, statusCode|nil]|nil, peerAddress|nil, peerPort|nil, error,
 *  attributes|nil]
 */
import type { Msgpack, Telemetry } from "@iii/core"
import { Unpackr } from "msgpackr"

type Span = Telemetry.Span
type Mutable<T> = { -readonly [K in keyof T]: T[K] }

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "bigint" })

/** Appends the stored bytes of a span (the layout above) to `w`. */
export const write = (w: Msgpack.Writer, s: Span): void => {
  w.arrayHeader(16)
  w.optionalString(s.parentSpanId)
  if (s.correlationId === s.traceId) w.nil()
  else w.string(s.correlationId)
  w.string(s.service)
  w.optionalString(s.component)
  w.optionalString(s.composition)
  w.optionalString(s.namespace)
  w.optionalString(s.pod)
  w.number(s.kind === "server" ? 0 : 1)
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
}

/** The span back from its key's ids and its stored bytes. */
export const decode = (traceId: string, spanId: string, bytes: Uint8Array): Span => {
  const t = unpackr.unpack(bytes) as Array<unknown>
  const span = {
    traceId: traceId as Telemetry.TraceId,
    spanId: spanId as Telemetry.SpanId
  } as Mutable<Span>
  if (t[0] !== null) span.parentSpanId = t[0] as Telemetry.SpanId
  span.correlationId = t[1] === null ? traceId : (t[1] as string)
  span.service = t[2] as string
  if (t[3] !== null) span.component = t[3] as string
  if (t[4] !== null) span.composition = t[4] as string
  if (t[5] !== null) span.namespace = t[5] as string
  if (t[6] !== null) span.pod = t[6] as string
  span.kind = t[7] === 0 ? "server" : "client"
  span.name = t[8] as string
  span.startTimeUnixNano = BigInt(t[9] as bigint | number)
  span.durationNano = t[10] as number
  const h = t[11] as [string, string, string | null, number | null] | null
  if (h !== null) {
    const http: Mutable<NonNullable<Span["http"]>> = { method: h[0], route: h[1] }
    if (h[2] !== null) http.path = h[2]
    if (h[3] !== null) http.statusCode = h[3]
    span.http = http
  }
  if (t[12] !== null) span.peerAddress = t[12] as string
  if (t[13] !== null) span.peerPort = t[13] as number
  span.error = t[14] as boolean
  if (t[15] !== null) span.attributes = t[15] as NonNullable<Span["attributes"]>
  return span
}
