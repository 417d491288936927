/**
 * How a span is stored in the `spans` database: a positional MessagePack array, without the trace
 * and span ids (the key holds them), in the wire's field order (core README, "Wire protocol") after
 * the parent id. Written on the ingest thread as plain bytes, so the writer thread copies bytes into
 * LMDB instead of encoding objects; decoded by the read paths.
 *
 * [parentSpanId|nil, correlationId|nil (= traceId), service, component|nil, composition|nil,
 *  namespace|nil, pod|nil, kind (0 server, 1 client, 2 internal, 3 producer, 4 consumer), name,
 *  startTimeUnixNano, durationNano, http [method, route, path|nil, statusCode|nil]|nil, peerAddress|nil,
 *  peerPort|nil, error, attributes|nil,
 *  then, only for a span with an OpenTelemetry status, events or links (OTLP):
 *  status [code (1 ok, 2 error), message|nil]|nil, events [[timeUnixNano, name, attributes|nil]…]|nil,
 *  links [[traceId (bin 16), spanId (bin 8), attributes|nil]…]|nil] (written by the wire's writer)
 * Spans stored before the kinds beyond server and client and the OpenTelemetry parts decode as before.
 */
import { type Msgpack, type Telemetry, WireProtocol } from "@iii/core"
import { Unpackr } from "msgpackr"

type Span = Telemetry.Span
type Mutable<T> = { -readonly [K in keyof T]: T[K] }

const kinds: ReadonlyArray<Telemetry.SpanKind> = ["server", "client", "internal", "producer", "consumer"]

type StoredAttributes = Telemetry.Attributes | null
type StoredOtel = [
  [number, string | null] | null,
  Array<[bigint | number, string, StoredAttributes]> | null,
  Array<[Uint8Array, Uint8Array, StoredAttributes]> | null
]

const hexOf = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")

const readOtel = (span: Mutable<Span>, [status, events, links]: StoredOtel): void => {
  if (status !== null)
    span.status =
      status[1] === null
        ? { code: status[0] === 1 ? "ok" : "error" }
        : { code: status[0] === 1 ? "ok" : "error", message: status[1] }
  if (events !== null)
    span.events = events.map(([time, name, attributes]) =>
      attributes === null
        ? { timeUnixNano: BigInt(time), name }
        : { timeUnixNano: BigInt(time), name, attributes }
    )
  if (links !== null)
    span.links = links.map(([traceId, spanId, attributes]) => {
      const link = {
        traceId: hexOf(traceId) as Telemetry.TraceId,
        spanId: hexOf(spanId) as Telemetry.SpanId
      }
      return attributes === null ? link : { ...link, attributes }
    })
}

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "bigint" })

/** Appends the stored bytes of a span (the layout above) to `w`. */
export const write = (w: Msgpack.Writer, s: Span): void => {
  w.arrayHeader(WireProtocol.spanFieldCount(s) + 1)
  w.optionalString(s.parentSpanId)
  WireProtocol.writeSpanFields(w, s)
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
  span.kind = kinds[t[7] as number] ?? "client"
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
  if (t.length > 16) readOtel(span, t.slice(16, 19) as StoredOtel)
  return span
}
