/**
 * How a span is stored in the `spans` database: a positional MessagePack array, without the trace
 * and span ids (the key holds them). Encoded on the ingest thread as plain bytes, so the writer
 * thread copies bytes into LMDB instead of encoding objects; decoded by the read paths.
 *
 * [parentSpanId|nil, correlationId|nil (= traceId), service, component|nil, composition|nil,
 *  namespace|nil, pod|nil, kind (0 server, 1 client), name, startTimeUnixNano, durationNano,
 *  http [method, route, path|nil, statusCode|nil]|nil, peerAddress|nil, peerPort|nil, error,
 *  attributes|nil]
 */
import { type Telemetry, WireProtocol } from "@iii/core"
import { Packr, Unpackr } from "msgpackr"

type Span = Telemetry.Span
type Mutable<T> = { -readonly [K in keyof T]: T[K] }

const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "bigint" })

// The wire's field order, after the parent id (which the wire carries with the ids).
const tuple = (s: Span): ReadonlyArray<unknown> => [s.parentSpanId ?? null, ...WireProtocol.spanFields(s)]

/** The stored bytes of a span; valid until the next `encode` (copy them before encoding another). */
export const encode = (span: Span): Uint8Array => packr.pack(tuple(span))

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
