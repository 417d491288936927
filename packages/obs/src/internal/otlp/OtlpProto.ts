/**
 * OTLP's wire formats, read and written with protobufjs from OpenTelemetry's own definitions (the
 * package's `proto/` directory, v1.11.0): export requests in from protobuf or OTLP/JSON, export
 * responses and error statuses out in the request's format. Decoded requests are protobufjs's
 * messages themselves, read through the shapes below (lowerCamelCase fields, only the fields set,
 * 64-bit integers as protobufjs Longs — `int64` makes them bigints —, bytes as Buffers, enums as
 * numbers), the same whichever format they came in. They are not copied into plain objects
 * (protobufjs `toObject`): that doubled the objects each span costs to decode. So that a field not
 * sent reads undefined, as in such a copy, the messages' prototypes carry no default values.
 *
 * OTLP/JSON differs from protobuf's canonical JSON mapping in one place: trace and span ids are hex,
 * not base64. Every field named `traceId`, `spanId` or `parentSpanId` in OTLP is such an id, so the
 * JSON parser turns those into bytes before protobufjs reads the rest (64-bit integers as decimal
 * strings or numbers, enums as numbers or names, other bytes as base64, unknown fields ignored).
 */
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Errors } from "@iii/core"
import { Either } from "effect"
import protobuf from "protobufjs"

export type Signal = "traces" | "logs" | "metrics"
export type Format = "protobuf" | "json"

// ---------------------------------------------------------------------------------------------------
// the decoded shapes (the fields the mapping reads; see the .proto files for the rest)

/** A 64-bit integer as protobufjs decodes it: a Long (a number when it is built without long.js). */
export type Int64 = number | protobuf.Long

// A Long's halves are read back through a DataView: V8 compiles getBigInt64 inline, making one
// bigint where shifting and or-ing BigInt halves makes four.
const int64View = new DataView(new ArrayBuffer(8))

/** A decoded 64-bit integer as a bigint (undefined stays undefined). */
export const int64 = (v: Int64 | undefined): bigint | undefined => {
  if (v === undefined) return undefined
  if (typeof v === "number") return BigInt(v)
  int64View.setInt32(0, v.high)
  int64View.setInt32(4, v.low)
  return v.unsigned ? int64View.getBigUint64(0) : int64View.getBigInt64(0)
}

export interface AnyValue {
  readonly stringValue?: string
  readonly boolValue?: boolean
  readonly intValue?: Int64
  readonly doubleValue?: number
  readonly arrayValue?: { readonly values?: ReadonlyArray<AnyValue> }
  readonly kvlistValue?: { readonly values?: ReadonlyArray<KeyValue> }
  readonly bytesValue?: Uint8Array
}

export interface KeyValue {
  readonly key?: string
  readonly value?: AnyValue
}

export interface Resource {
  readonly attributes?: ReadonlyArray<KeyValue>
}

export interface Scope {
  readonly name?: string
  readonly version?: string
  readonly attributes?: ReadonlyArray<KeyValue>
}

export interface SpanEvent {
  readonly timeUnixNano?: Int64
  readonly name?: string
  readonly attributes?: ReadonlyArray<KeyValue>
}

export interface SpanLink {
  readonly traceId?: Uint8Array
  readonly spanId?: Uint8Array
  readonly attributes?: ReadonlyArray<KeyValue>
}

export interface Span {
  readonly traceId?: Uint8Array
  readonly spanId?: Uint8Array
  readonly parentSpanId?: Uint8Array
  readonly name?: string
  /** 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  readonly kind?: number
  readonly startTimeUnixNano?: Int64
  readonly endTimeUnixNano?: Int64
  readonly attributes?: ReadonlyArray<KeyValue>
  readonly events?: ReadonlyArray<SpanEvent>
  readonly links?: ReadonlyArray<SpanLink>
  /** code: 0 unset, 1 ok, 2 error. */
  readonly status?: { readonly code?: number; readonly message?: string }
}

export interface TracesRequest {
  readonly resourceSpans?: ReadonlyArray<{
    readonly resource?: Resource
    readonly scopeSpans?: ReadonlyArray<{ readonly scope?: Scope; readonly spans?: ReadonlyArray<Span> }>
  }>
}

export interface LogRecord {
  readonly timeUnixNano?: Int64
  readonly observedTimeUnixNano?: Int64
  readonly severityNumber?: number
  readonly severityText?: string
  readonly body?: AnyValue
  readonly attributes?: ReadonlyArray<KeyValue>
  readonly traceId?: Uint8Array
  readonly spanId?: Uint8Array
  readonly eventName?: string
}

export interface LogsRequest {
  readonly resourceLogs?: ReadonlyArray<{
    readonly resource?: Resource
    readonly scopeLogs?: ReadonlyArray<{
      readonly scope?: Scope
      readonly logRecords?: ReadonlyArray<LogRecord>
    }>
  }>
}

export interface NumberDataPoint {
  readonly attributes?: ReadonlyArray<KeyValue>
  readonly startTimeUnixNano?: Int64
  readonly timeUnixNano?: Int64
  readonly asDouble?: number
  readonly asInt?: Int64
}

export interface HistogramDataPoint {
  readonly attributes?: ReadonlyArray<KeyValue>
  readonly startTimeUnixNano?: Int64
  readonly timeUnixNano?: Int64
  readonly count?: Int64
  readonly sum?: number
  readonly bucketCounts?: ReadonlyArray<Int64>
  readonly explicitBounds?: ReadonlyArray<number>
  readonly min?: number
  readonly max?: number
}

export interface Metric {
  readonly name?: string
  readonly unit?: string
  readonly gauge?: { readonly dataPoints?: ReadonlyArray<NumberDataPoint> }
  readonly sum?: {
    readonly dataPoints?: ReadonlyArray<NumberDataPoint>
    /** 1 delta, 2 cumulative. */
    readonly aggregationTemporality?: number
    readonly isMonotonic?: boolean
  }
  readonly histogram?: {
    readonly dataPoints?: ReadonlyArray<HistogramDataPoint>
    readonly aggregationTemporality?: number
  }
  readonly exponentialHistogram?: { readonly dataPoints?: ReadonlyArray<unknown> }
  readonly summary?: { readonly dataPoints?: ReadonlyArray<unknown> }
}

export interface MetricsRequest {
  readonly resourceMetrics?: ReadonlyArray<{
    readonly resource?: Resource
    readonly scopeMetrics?: ReadonlyArray<{
      readonly scope?: Scope
      readonly metrics?: ReadonlyArray<Metric>
    }>
  }>
}

export interface Requests {
  readonly traces: TracesRequest
  readonly logs: LogsRequest
  readonly metrics: MetricsRequest
}

// ---------------------------------------------------------------------------------------------------
// the definitions

const protoDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "proto")

const services = {
  traces: ["trace", "Trace", "rejectedSpans"],
  logs: ["logs", "Logs", "rejectedLogRecords"],
  metrics: ["metrics", "Metrics", "rejectedDataPoints"]
} as const

/**
 * Makes each of a oneof's fields a oneof of its own (each still read and written only when present). protobufjs
 * records a decoded oneof member by `delete`-ing the message's other members, which turns every
 * decoded AnyValue — one per attribute — into a slow dictionary-mode object: decoding a telemetrygen
 * request took 1.45× as long. The one difference: a malformed value carrying two members keeps both,
 * and the mapping reads the first of them in its own order, instead of the last one sent.
 */
const untieOneof = (type: protobuf.Type, name: string) => {
  const oneof = type.oneofs[name]
  if (oneof === undefined) throw new Error(`${type.name} has no oneof ${name}`)
  const fields = [...oneof.fieldsArray]
  // Detached first: removing a oneof removes its fields from the type.
  for (const field of fields) oneof.remove(field)
  type.remove(oneof)
  // Each member in a oneof of its own, as proto3 `optional` fields are: present when sent, defaults
  // (false, 0, "") included, and setting it deletes no other field.
  for (const field of fields) type.add(new protobuf.OneOf(`_${field.name}`, [field.name]))
}

/**
 * Takes the default values (0, "", false, null, an empty Buffer) off the prototypes of every message
 * type under `ns`, so a decoded message's field that was not sent reads undefined (repeated fields
 * are the message's own arrays, empty when none was sent). protobufjs's encoder and `toObject` read
 * only the fields a message has of its own, so they are not affected.
 */
const noDefaults = (ns: protobuf.Namespace): void => {
  for (const nested of ns.nestedArray) {
    if (nested instanceof protobuf.Type) {
      const prototype = nested.ctor.prototype as unknown as Record<string, unknown>
      for (const field of nested.fieldsArray)
        if (!field.repeated && !field.map) prototype[field.name] = undefined
    }
    if (nested instanceof protobuf.Namespace) noDefaults(nested)
  }
}

/** The message types, loaded on first use (parsing the .proto files takes tens of milliseconds). */
const load = () => {
  const root = new protobuf.Root()
  root.resolvePath = (_origin, target) => join(protoDir, target)
  root.loadSync(
    Object.values(services).map(([dir]) => `opentelemetry/proto/collector/${dir}/v1/${dir}_service.proto`)
  )
  // google.rpc.Status (googleapis, google/rpc/status.proto), the body of OTLP/HTTP error answers; its
  // `details` (field 3, repeated Any) are never sent, so they are left out.
  root.addJSON({
    google: {
      nested: {
        rpc: {
          nested: {
            Status: { fields: { code: { type: "int32", id: 1 }, message: { type: "string", id: 2 } } }
          }
        }
      }
    }
  })
  untieOneof(root.lookupType("opentelemetry.proto.common.v1.AnyValue"), "value")
  root.resolveAll()
  noDefaults(root)
  const types = (signal: Signal) => {
    const [dir, name] = services[signal]
    const ns = `opentelemetry.proto.collector.${dir}.v1.Export${name}Service`
    return { request: root.lookupType(`${ns}Request`), response: root.lookupType(`${ns}Response`) }
  }
  return {
    signals: { traces: types("traces"), logs: types("logs"), metrics: types("metrics") },
    status: root.lookupType("google.rpc.Status")
  }
}

let loaded: ReturnType<typeof load> | undefined
const definitions = () => {
  loaded ??= load()
  return loaded
}

const hexIdKeys = new Set(["traceId", "spanId", "parentSpanId"])

/** JSON.parse reviver: OTLP/JSON's hex ids as bytes (an empty string is an absent id). */
const hexIds = (key: string, value: unknown): unknown => {
  if (!hexIdKeys.has(key) || typeof value !== "string") return value
  if (value.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(value))
    throw new Error(`${key} ${JSON.stringify(value.slice(0, 40))} is not hex`)
  return Buffer.from(value, "hex")
}

/** ASCII strings up to this many bytes are looked up in (and kept in) `recent`. */
const recentMaxBytes = 64
/** Slots of `recent`, a power of two. */
const recentSlots = 4096
/** Strings decoded lately, by a hash of their bytes; a slot holds the last string that hashed there. */
const recent: Array<string | undefined> = new Array(recentSlots).fill(undefined)

const sameAscii = (s: string, buf: Uint8Array, start: number): boolean => {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) !== buf[start + i]) return false
  return true
}

/**
 * The reader protobuf requests are decoded with: protobufjs's, except for short ASCII strings (nearly
 * every attribute key and value, name and scope), which come from `recent` when the same bytes came
 * lately, else from one native latin1 slice. The same keys and values come in every span of a
 * request and of the next: one string each instead of one per span, already a property key when
 * the mapping makes it one. protobufjs builds a string it verifies as UTF-8 by appending 8 characters
 * at a time, so one of 13 characters or more is a rope, which V8 flattens (a runtime call and a copy)
 * when the mapping reads it or uses it as a property key. Other strings are protobufjs's, verified
 * as before.
 */
class Reader extends protobuf.BufferReader {
  override stringVerify(): string {
    const at = this.pos
    // The length as protobufjs's own stringVerify reads it (the same errors for a truncated one).
    const length = this.size()
    const start = this.pos
    const end = start + length
    const buf = this.buf
    if (length <= recentMaxBytes && end <= this.len) {
      let hash = length
      let i = start
      for (; i < end; i++) {
        const c = buf[i] as number
        if (c >= 0x80) break
        hash = (Math.imul(hash, 31) + c) | 0
      }
      if (i === end) {
        this.pos = end
        const slot = hash & (recentSlots - 1)
        const cached = recent[slot]
        if (cached !== undefined && cached.length === length && sameAscii(cached, buf, start)) return cached
        const decoded = (buf as Buffer).toString("latin1", start, end)
        recent[slot] = decoded
        return decoded
      }
    }
    this.pos = at
    return super.stringVerify()
  }
}

/** The export request in `bytes`; Left with the reason when they are not one. */
export const decodeRequest = <S extends Signal>(
  signal: S,
  format: Format,
  bytes: Uint8Array
): Either.Either<Requests[S], string> => {
  const type = definitions().signals[signal].request
  try {
    if (format === "protobuf")
      return Either.right(
        type.decode(new Reader(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))) as Requests[S]
      )
    const json: unknown = JSON.parse(Buffer.from(bytes).toString("utf8"), hexIds)
    if (typeof json !== "object" || json === null || Array.isArray(json))
      return Either.left("the body is not a JSON object")
    return Either.right(type.fromObject(json) as Requests[S])
  } catch (e) {
    return Either.left(
      format === "protobuf"
        ? `not a protobuf export request: ${Errors.messageOf(e)}`
        : `not an OTLP/JSON export request: ${Errors.messageOf(e)}`
    )
  }
}

const encode = (type: protobuf.Type, value: object, format: Format): Uint8Array =>
  format === "protobuf"
    ? type.encode(type.fromObject(value)).finish()
    : Buffer.from(JSON.stringify(type.toObject(type.fromObject(value), { longs: String })))

/**
 * An export request as protobuf bytes (what the exporter sends): `request` in the decoded shape, its
 * 64-bit integers as decimal strings (protobufjs reads those, not bigints).
 */
export const encodeRequest = (signal: Signal, request: object): Uint8Array =>
  encode(definitions().signals[signal].request, request, "protobuf")

/**
 * The export response: empty for a full success, else a partial success naming how many items were
 * rejected and why.
 */
export const encodeResponse = (
  signal: Signal,
  format: Format,
  rejected: { readonly count: number; readonly message: string } | undefined
): Uint8Array =>
  encode(
    definitions().signals[signal].response,
    rejected === undefined
      ? {}
      : { partialSuccess: { [services[signal][2]]: rejected.count, errorMessage: rejected.message } },
    format
  )

/** An error answer's body: a google.rpc.Status with the gRPC `code` and a message. */
export const encodeStatus = (format: Format, code: number, message: string): Uint8Array =>
  encode(definitions().status, { code, message }, format)

/** The content types OTLP/HTTP speaks, by media type. */
export const contentTypes: Readonly<Record<Format, string>> = {
  protobuf: "application/x-protobuf",
  json: "application/json"
}

/** The format of a Content-Type header (parameters such as `charset` ignored), or undefined. */
export const formatOf = (contentType: string | undefined): Format | undefined => {
  const media = (contentType ?? "").split(";")[0]?.trim().toLowerCase()
  return media === contentTypes.protobuf ? "protobuf" : media === contentTypes.json ? "json" : undefined
}
