/**
 * The telemetry model shared by the agent (which produces it), the wire protocol (which carries it)
 * and obs (which stores and queries it).
 *
 * Field names are the camelCase forms of OpenTelemetry semantic conventions; `otelAttributeNames`
 * holds the mapping so an OTLP exporter is one function. Ids are lowercase hex strings in memory
 * and in JSON; the wire codec carries them as raw bytes.
 *
 * Unix-nanosecond timestamps exceed 2^53, so they are `bigint`. JSON renders them as decimal strings,
 * as OTLP/JSON does. Durations fit comfortably in a double (2^53 ns ≈ 104 days).
 */
import * as Schema from "effect/Schema"
import { logLevels } from "./TelemetryConventions.js"

export {
  otelAttributeNames,
  type StatusClass,
  severityNumber,
  statusClass
} from "./TelemetryConventions.js"

const hexId = (bytes: number, what: string) =>
  Schema.String.pipe(
    Schema.pattern(new RegExp(`^[0-9a-f]{${bytes * 2}}$`), {
      message: () => `${what} must be ${bytes * 2} lowercase hex characters`
    }),
    Schema.filter((s) => !/^0+$/.test(s) || `${what} must not be all zeros`),
    Schema.brand(what)
  )

/** 16 bytes as 32 lowercase hex characters, never all zeros (W3C Trace Context). */
export const TraceId = hexId(16, "TraceId")
export type TraceId = typeof TraceId.Type

/** 8 bytes as 16 lowercase hex characters, never all zeros. */
export const SpanId = hexId(8, "SpanId")
export type SpanId = typeof SpanId.Type

/** Unix time in nanoseconds: an unsigned 64-bit integer, as OTLP and the wire codec carry it. */
export const UnixNano = Schema.BigIntFromSelf.pipe(Schema.betweenBigInt(0n, 2n ** 64n - 1n))

const NonNegativeInt = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

/**
 * Free-form attributes, OpenTelemetry style: dotted keys, scalar values. A key `__proto__` crosses
 * the wire as `__proto_`: the decoder (msgpackr) renames it so no frame can reach an object's prototype.
 */
export const Attributes = Schema.Record({
  key: Schema.String,
  value: Schema.Union(Schema.String, Schema.Number, Schema.Boolean)
})
export type Attributes = typeof Attributes.Type

/** Where telemetry came from. Mapped to OpenTelemetry resource attributes by `otelAttributeNames`. */
export const Resource = {
  /** service.name */
  service: Schema.String,
  /** iii.component: the ServiceComposition component, when the service belongs to one. */
  component: Schema.optional(Schema.String),
  /** iii.composition: the ServiceComposition's name. */
  composition: Schema.optional(Schema.String),
  /** k8s.namespace.name */
  namespace: Schema.optional(Schema.String),
  /** k8s.pod.name (or the host name outside Kubernetes) */
  pod: Schema.optional(Schema.String)
}

/**
 * OpenTelemetry's span kinds. The agent captures `server` and `client` spans; spans received over
 * OTLP may be of any kind (`internal` for OTLP's unspecified kind, as the specification allows).
 */
export const SpanKind = Schema.Literal("server", "client", "internal", "producer", "consumer")
export type SpanKind = typeof SpanKind.Type

/** OpenTelemetry's span status as a tracer set it; a span without one has the status unset. */
export const SpanStatus = Schema.Struct({
  code: Schema.Literal("ok", "error"),
  message: Schema.optional(Schema.String)
})
export type SpanStatus = typeof SpanStatus.Type

/** A span event (OpenTelemetry): a named, dated annotation of a span, such as an exception. */
export const SpanEvent = Schema.Struct({
  timeUnixNano: UnixNano,
  name: Schema.String,
  attributes: Schema.optional(Attributes)
})
export type SpanEvent = typeof SpanEvent.Type

/** A link from a span to another span (OpenTelemetry), in its trace or another. */
export const SpanLink = Schema.Struct({
  traceId: TraceId,
  spanId: SpanId,
  attributes: Schema.optional(Attributes)
})
export type SpanLink = typeof SpanLink.Type

export const HttpInfo = Schema.Struct({
  /** http.request.method */
  method: Schema.String,
  /** http.route: the normalised route (`/users/{id}`), bounded cardinality. */
  route: Schema.String,
  /** url.path: the raw path as seen on the wire. */
  path: Schema.optional(Schema.String),
  /** http.response.status_code; absent when the connection closed before a response. */
  statusCode: Schema.optional(NonNegativeInt)
})
export type HttpInfo = typeof HttpInfo.Type

export const Span = Schema.Struct({
  traceId: TraceId,
  spanId: SpanId,
  parentSpanId: Schema.optional(SpanId),
  /** iii.correlation_id: the trace id unless the request carried `x-iii-correlation-id`. */
  correlationId: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256)),
  ...Resource,
  kind: SpanKind,
  /** span name: `METHOD route` for HTTP. */
  name: Schema.String,
  startTimeUnixNano: UnixNano,
  durationNano: NonNegativeInt,
  http: Schema.optional(HttpInfo),
  /** network.peer.address */
  peerAddress: Schema.optional(Schema.String),
  /** network.peer.port */
  peerPort: Schema.optional(NonNegativeInt),
  /**
   * OpenTelemetry status ERROR: a 5xx for server spans, a 4xx/5xx or failed connection for client
   * spans; for a span received over OTLP, whether its tracer set the status to ERROR.
   */
  error: Schema.Boolean,
  attributes: Schema.optional(Attributes),
  /** The status as the span's tracer set it (OTLP spans); `error` is true exactly when its code is `error`. */
  status: Schema.optional(SpanStatus),
  events: Schema.optional(Schema.Array(SpanEvent)),
  links: Schema.optional(Schema.Array(SpanLink))
})
export type Span = typeof Span.Type

/**
 * A mergeable latency sketch (see `LatencySketch`): bucket index → count, plus exact count and sum.
 * Kept structural here so the wire codec and the stores need no sketch code to carry one.
 */
export const SketchData = Schema.Struct({
  count: NonNegativeInt,
  sum: Schema.Number,
  zeroCount: NonNegativeInt,
  /** Index of the first bucket in `counts`. */
  offset: Schema.Number.pipe(Schema.int()),
  counts: Schema.Array(NonNegativeInt)
})
export type SketchData = typeof SketchData.Type

export const MetricKind = Schema.Literal("counter", "gauge", "distribution")
export type MetricKind = typeof MetricKind.Type

export const MetricPoint = Schema.Struct({
  /** OpenTelemetry metric name, e.g. `http.server.request.duration`, `iii.tcp.bytes_sent`. */
  name: Schema.String.pipe(Schema.minLength(1)),
  kind: MetricKind,
  ...Resource,
  /** End of the interval the point covers. */
  timeUnixNano: UnixNano,
  /** Length of the interval for counters and distributions; 0 for gauges. */
  intervalNano: NonNegativeInt,
  /** Counter increment over the interval, or the gauge's value. Distributions: the count. */
  value: Schema.Number,
  /** Distributions only, in the unit the name implies (milliseconds for durations). */
  sketch: Schema.optional(SketchData),
  attributes: Schema.optional(Attributes)
})
export type MetricPoint = typeof MetricPoint.Type

export const LogLevel = Schema.Literal(...logLevels)
export type LogLevel = typeof LogLevel.Type

export const LogRecord = Schema.Struct({
  timeUnixNano: UnixNano,
  ...Resource,
  /** severity_text, lowercased; the number follows from `severityNumber`. */
  level: LogLevel,
  body: Schema.String,
  /** log.iostream */
  stream: Schema.optional(Schema.Literal("stdout", "stderr")),
  traceId: Schema.optional(TraceId),
  spanId: Schema.optional(SpanId),
  correlationId: Schema.optional(Schema.String),
  attributes: Schema.optional(Attributes)
})
export type LogRecord = typeof LogRecord.Type
