/**
 * OTLP export requests (decoded by `OtlpProto`) as iii's telemetry model: pure functions, one per
 * signal, each giving the items it could map and the ones it rejected with a reason. The mapping is
 * written down in the package README ("OpenTelemetry (OTLP) in"); in short:
 *
 * - Resource `service.name` → service (`unknown_service` without one, as OpenTelemetry's SDKs say),
 *   `k8s.namespace.name` → namespace, `k8s.pod.name` → pod, `iii.component`/`iii.composition` →
 *   component/composition; every other resource attribute (`k8s.container.name`, `k8s.node.name`,
 *   `host.name`…) and the scope's name and version (`otel.scope.name`, `otel.scope.version`) join
 *   each item's attributes, the item's own winning.
 * - Attribute values: strings, booleans and doubles as they are, integers as numbers (as decimal
 *   strings beyond 2^53), bytes as base64, arrays and key-value lists as JSON text.
 * - HTTP semantic conventions, current and older names: `http.request.method`/`http.method`,
 *   `http.route`, `http.response.status_code`/`http.status_code`, `url.path` (else `http.target`
 *   without its query) → the span's `http` (its route: `http.route`, else the span name); the
 *   attributes so mapped leave the attribute map (`http.target` stays).
 */
import type { Telemetry } from "@iii/core"
import * as Otlp from "./OtlpProto.js"

type Mutable<T> = { -readonly [K in keyof T]: T[K] }
type Scalar = string | number | boolean
type Attributes = Record<string, Scalar>
/**
 * Attributes being mapped: a key taken out (into a field of the item) is set to undefined, not
 * deleted, as `delete` turns the object into V8's slow dictionary mode; `nonEmpty` drops those keys.
 */
type Working = Record<string, Scalar | undefined>

/** Items rejected: how many, and the first few reasons. */
export class Rejections {
  count = 0
  private readonly reasons: Array<string> = []

  add(reason: string, count = 1): void {
    if (count <= 0) return
    this.count += count
    if (this.reasons.length < 3) this.reasons.push(reason)
  }

  /** The partial-success message: the reasons, and how many more there were. */
  message(): string {
    const more = this.count - this.reasons.length
    return this.reasons.join("; ") + (more > 0 ? `; and ${more} more` : "")
  }
}

export interface Mapped<A> {
  readonly items: Array<A>
  /** Each item's position among the request's items of its signal (a stable identity for a retry). */
  readonly indexes: Array<number>
  readonly rejections: Rejections
}

// ---------------------------------------------------------------------------------------------------
// values and attributes

const jsonValue = (v: Otlp.AnyValue): unknown => {
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(jsonValue)
  if (v.kvlistValue !== undefined) {
    const o: Record<string, unknown> = {}
    for (const kv of v.kvlistValue.values ?? [])
      if (kv.key !== undefined) o[kv.key] = kv.value === undefined ? null : jsonValue(kv.value)
    return o
  }
  return scalar(v) ?? null
}

/** An attribute value as the model keeps it; undefined for an empty value. */
const scalar = (v: Otlp.AnyValue): Scalar | undefined => {
  if (v.stringValue !== undefined) return v.stringValue
  if (v.boolValue !== undefined) return v.boolValue
  if (v.intValue !== undefined) {
    const big = Otlp.int64(v.intValue) ?? 0n
    const n = Number(big)
    return Number.isSafeInteger(n) ? n : big.toString()
  }
  if (v.doubleValue !== undefined) return v.doubleValue
  if (v.bytesValue !== undefined) return Buffer.from(v.bytesValue).toString("base64")
  if (v.arrayValue !== undefined || v.kvlistValue !== undefined) return JSON.stringify(jsonValue(v))
  return undefined
}

/** Adds `kvs` to `into` (later keys win); `__proto__` is kept as `__proto_`, as the wire decoder does. */
const addAttributes = (into: Working, kvs: ReadonlyArray<Otlp.KeyValue> | undefined): void => {
  if (kvs === undefined) return
  for (const kv of kvs) {
    const value = kv.value === undefined ? undefined : scalar(kv.value)
    if (kv.key === undefined || value === undefined) continue
    into[kv.key === "__proto__" ? "__proto_" : kv.key] = value
  }
}

const take = (a: Working, ...keys: ReadonlyArray<string>): Scalar | undefined => {
  for (const key of keys) {
    const v = a[key]
    if (v !== undefined) {
      a[key] = undefined
      return v
    }
  }
  return undefined
}

const asString = (v: Scalar | undefined): string | undefined => (typeof v === "string" ? v : undefined)

const asInteger = (v: Scalar | undefined): number | undefined => {
  const n = typeof v === "string" && /^\d{1,15}$/.test(v) ? Number(v) : v
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

// ---------------------------------------------------------------------------------------------------
// resource and scope

interface Origin {
  readonly resource: Pick<Telemetry.Span, "service" | "component" | "composition" | "namespace" | "pod">
  /** Resource and scope attributes the items inherit. */
  readonly attributes: Attributes
}

const originOf = (resource: Otlp.Resource | undefined, scope: Otlp.Scope | undefined): Origin => {
  const attributes: Working = {}
  addAttributes(attributes, resource?.attributes)
  const r: Mutable<Origin["resource"]> = {
    service: asString(take(attributes, "service.name")) ?? "unknown_service"
  }
  const component = asString(take(attributes, "iii.component"))
  if (component !== undefined) r.component = component
  const composition = asString(take(attributes, "iii.composition"))
  if (composition !== undefined) r.composition = composition
  const namespace = asString(take(attributes, "k8s.namespace.name"))
  if (namespace !== undefined) r.namespace = namespace
  const pod = asString(take(attributes, "k8s.pod.name"))
  if (pod !== undefined) r.pod = pod
  if (scope?.name !== undefined && scope.name !== "") attributes["otel.scope.name"] = scope.name
  if (scope?.version !== undefined && scope.version !== "") attributes["otel.scope.version"] = scope.version
  addAttributes(attributes, scope?.attributes)
  return { resource: r, attributes: nonEmpty(attributes) ?? {} }
}

/** The item's attributes over its origin's. */
const attributesOf = (origin: Origin, own: ReadonlyArray<Otlp.KeyValue> | undefined): Working => {
  const a: Working = { ...origin.attributes }
  addAttributes(a, own)
  return a
}

/** The attributes, without the keys taken out; undefined when there are none. */
const nonEmpty = (a: Working): Attributes | undefined => {
  let any = false
  for (const k in a) {
    if (a[k] === undefined) return rebuilt(a)
    any = true
  }
  return any ? (a as Attributes) : undefined
}

const rebuilt = (a: Working): Attributes | undefined => {
  let out: Attributes | undefined
  for (const k in a) {
    const v = a[k]
    if (v === undefined) continue
    out ??= {}
    out[k] = v
  }
  return out
}

// ---------------------------------------------------------------------------------------------------
// spans

/** An id of `bytes` bytes as hex; undefined when absent (empty), Left-ish string when malformed. */
const idOf = (v: Uint8Array | undefined, bytes: number): string | undefined | false => {
  if (v === undefined || v.length === 0) return undefined
  if (v.length !== bytes) return false
  let any = 0
  for (let i = 0; i < bytes; i++) any |= v[i] as number
  // A view, not a copy: decoded bytes are slices of the request's buffer.
  return any === 0
    ? false
    : (Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, bytes)).toString("hex")
}

const kinds: ReadonlyArray<Telemetry.SpanKind> = [
  "internal",
  "internal",
  "server",
  "client",
  "producer",
  "consumer"
]

const httpOf = (a: Working, name: string): Telemetry.HttpInfo | undefined => {
  const method = asString(a["http.request.method"] ?? a["http.method"])
  if (method === undefined) return undefined
  take(a, "http.request.method", "http.method")
  const http: Mutable<Telemetry.HttpInfo> = {
    method,
    route: asString(take(a, "http.route")) ?? name
  }
  const target = asString(a["http.target"])
  const path = asString(take(a, "url.path")) ?? target?.split("?")[0]
  if (path !== undefined) http.path = path
  const status = asInteger(take(a, "http.response.status_code", "http.status_code"))
  if (status !== undefined) http.statusCode = status
  return http
}

const maxDurationNano = BigInt(Number.MAX_SAFE_INTEGER)

const mapSpan = (s: Otlp.Span, origin: Origin): Telemetry.Span | string => {
  const traceId = idOf(s.traceId, 16)
  if (traceId === undefined || traceId === false) return "a span's trace id is not 16 bytes (or is all zeros)"
  const spanId = idOf(s.spanId, 8)
  if (spanId === undefined || spanId === false) return "a span's span id is not 8 bytes (or is all zeros)"
  const parentSpanId = idOf(s.parentSpanId, 8)
  if (parentSpanId === false) return `span ${spanId}: its parent span id is not 8 bytes (or is all zeros)`
  const start = Otlp.int64(s.startTimeUnixNano) ?? 0n
  const end = Otlp.int64(s.endTimeUnixNano) ?? 0n
  if (end < start) return `span ${spanId}: it ends before it starts`
  const duration = end - start
  if (duration > maxDurationNano) return `span ${spanId}: it lasts more than 104 days`
  const name = s.name ?? ""
  const a = attributesOf(origin, s.attributes)
  const correlation = asString(a["iii.correlation_id"])
  const correlationId =
    correlation !== undefined && correlation.length >= 1 && correlation.length <= 256 ? correlation : traceId
  if (correlationId !== traceId) a["iii.correlation_id"] = undefined
  const span: Mutable<Telemetry.Span> = {
    traceId: traceId as Telemetry.TraceId,
    spanId: spanId as Telemetry.SpanId,
    correlationId,
    ...origin.resource,
    kind: kinds[s.kind ?? 0] ?? "internal",
    name,
    startTimeUnixNano: start,
    durationNano: Number(duration),
    error: s.status?.code === 2
  }
  if (parentSpanId !== undefined) span.parentSpanId = parentSpanId as Telemetry.SpanId
  const http = httpOf(a, name)
  if (http !== undefined) span.http = http
  const peerAddress = asString(take(a, "network.peer.address", "net.peer.ip"))
  if (peerAddress !== undefined) span.peerAddress = peerAddress
  const peerPort = asInteger(a["network.peer.port"] ?? a["net.peer.port"])
  if (peerPort !== undefined && peerPort <= 65535) {
    take(a, "network.peer.port", "net.peer.port")
    span.peerPort = peerPort
  }
  const attributes = nonEmpty(a)
  if (attributes !== undefined) span.attributes = attributes
  const code = s.status?.code
  if (code === 1 || code === 2) {
    const message = s.status?.message
    span.status = message
      ? { code: code === 1 ? "ok" : "error", message }
      : { code: code === 1 ? "ok" : "error" }
  }
  if (s.events !== undefined && s.events.length > 0)
    span.events = s.events.map((e) => {
      const working: Working = {}
      addAttributes(working, e.attributes)
      const event = { timeUnixNano: Otlp.int64(e.timeUnixNano) ?? 0n, name: e.name ?? "" }
      const attributes = nonEmpty(working)
      return attributes === undefined ? event : { ...event, attributes }
    })
  const links: Array<Telemetry.SpanLink> = []
  for (const l of s.links ?? []) {
    const linkTrace = idOf(l.traceId, 16)
    const linkSpan = idOf(l.spanId, 8)
    // A link without both ids points nowhere: it is left out.
    if (typeof linkTrace !== "string" || typeof linkSpan !== "string") continue
    const working: Working = {}
    addAttributes(working, l.attributes)
    const link = { traceId: linkTrace as Telemetry.TraceId, spanId: linkSpan as Telemetry.SpanId }
    const attributes = nonEmpty(working)
    links.push(attributes === undefined ? link : { ...link, attributes })
  }
  if (links.length > 0) span.links = links
  return span
}

export const mapTraces = (request: Otlp.TracesRequest): Mapped<Telemetry.Span> => {
  const out: Mapped<Telemetry.Span> = { items: [], indexes: [], rejections: new Rejections() }
  let index = 0
  for (const rs of request.resourceSpans ?? [])
    for (const ss of rs.scopeSpans ?? []) {
      const origin = originOf(rs.resource, ss.scope)
      for (const s of ss.spans ?? []) {
        const span = mapSpan(s, origin)
        if (typeof span === "string") out.rejections.add(span)
        else {
          out.items.push(span)
          out.indexes.push(index)
        }
        index++
      }
    }
  return out
}

// ---------------------------------------------------------------------------------------------------
// logs

const levels: ReadonlyArray<Telemetry.LogLevel> = ["trace", "debug", "info", "warn", "error", "fatal"]

/** Severity numbers 1–24 in six ranges of four; without one, the severity text if it names a level. */
const levelOf = (r: Otlp.LogRecord): Telemetry.LogLevel => {
  const n = r.severityNumber ?? 0
  if (n >= 1 && n <= 24) return levels[Math.floor((n - 1) / 4)] ?? "info"
  const text = (r.severityText ?? "").toLowerCase()
  return levels.find((l) => l === text) ?? (text === "warning" ? "warn" : "info")
}

const bodyOf = (v: Otlp.AnyValue | undefined): string => {
  if (v === undefined) return ""
  const s = scalar(v)
  return s === undefined ? "" : typeof s === "string" ? s : String(s)
}

/** `nowNano` dates a record that carries neither a time nor an observed time. */
export const mapLogs = (request: Otlp.LogsRequest, nowNano: bigint): Mapped<Telemetry.LogRecord> => {
  const out: Mapped<Telemetry.LogRecord> = { items: [], indexes: [], rejections: new Rejections() }
  let index = 0
  for (const rl of request.resourceLogs ?? [])
    for (const sl of rl.scopeLogs ?? []) {
      const origin = originOf(rl.resource, sl.scope)
      for (const r of sl.logRecords ?? []) {
        const a = attributesOf(origin, r.attributes)
        if (r.eventName !== undefined && r.eventName !== "") a["event.name"] = r.eventName
        const time = Otlp.int64(r.timeUnixNano) || Otlp.int64(r.observedTimeUnixNano) || nowNano
        const log: Mutable<Telemetry.LogRecord> = {
          timeUnixNano: time,
          ...origin.resource,
          level: levelOf(r),
          body: bodyOf(r.body)
        }
        // Ids that are not the right length are not ids: the record is kept without them.
        const traceId = idOf(r.traceId, 16)
        if (typeof traceId === "string") log.traceId = traceId as Telemetry.TraceId
        const spanId = idOf(r.spanId, 8)
        if (typeof spanId === "string") log.spanId = spanId as Telemetry.SpanId
        const stream = a["log.iostream"]
        if (stream === "stdout" || stream === "stderr") {
          a["log.iostream"] = undefined
          log.stream = stream
        }
        const correlationId = asString(take(a, "iii.correlation_id"))
        if (correlationId !== undefined) log.correlationId = correlationId
        const attributes = nonEmpty(a)
        if (attributes !== undefined) log.attributes = attributes
        out.items.push(log)
        out.indexes.push(index++)
      }
    }
  return out
}

// ---------------------------------------------------------------------------------------------------
// metrics

const DELTA = 1

const pointValue = (p: Otlp.NumberDataPoint): number =>
  p.asDouble !== undefined ? p.asDouble : p.asInt !== undefined ? Number(Otlp.int64(p.asInt)) : 0

const intervalOf = (startTime: Otlp.Int64 | undefined, endTime: Otlp.Int64 | undefined): number => {
  const start = Otlp.int64(startTime)
  const time = Otlp.int64(endTime) ?? 0n
  return start !== undefined && start > 0n && start <= time ? Number(time - start) : 0
}

export const mapMetrics = (request: Otlp.MetricsRequest): Mapped<Telemetry.MetricPoint> => {
  const out: Mapped<Telemetry.MetricPoint> = { items: [], indexes: [], rejections: new Rejections() }
  let index = 0
  const keep = (point: Telemetry.MetricPoint) => {
    out.items.push(point)
    out.indexes.push(index++)
  }
  for (const rm of request.resourceMetrics ?? [])
    for (const sm of rm.scopeMetrics ?? []) {
      const origin = originOf(rm.resource, sm.scope)
      for (const m of sm.metrics ?? []) {
        const name = m.name ?? ""
        const point = (
          p: { readonly attributes?: ReadonlyArray<Otlp.KeyValue>; readonly timeUnixNano?: Otlp.Int64 },
          kind: Telemetry.MetricKind,
          value: number,
          intervalNano: number,
          extra: Attributes = {}
        ): Telemetry.MetricPoint => {
          const a = { ...attributesOf(origin, p.attributes), ...extra }
          const attributes = nonEmpty(a)
          const base = {
            name,
            kind,
            ...origin.resource,
            timeUnixNano: Otlp.int64(p.timeUnixNano) ?? 0n,
            intervalNano,
            value
          }
          return attributes === undefined ? base : { ...base, attributes }
        }
        const count =
          (m.gauge?.dataPoints?.length ?? 0) +
          (m.sum?.dataPoints?.length ?? 0) +
          (m.histogram?.dataPoints?.length ?? 0) +
          (m.exponentialHistogram?.dataPoints?.length ?? 0) +
          (m.summary?.dataPoints?.length ?? 0)
        if (name === "") {
          out.rejections.add("a metric without a name", count)
          index += count
          continue
        }
        for (const p of m.gauge?.dataPoints ?? []) keep(point(p, "gauge", pointValue(p), 0))
        if (m.sum !== undefined) {
          const delta = m.sum.isMonotonic === true && m.sum.aggregationTemporality === DELTA
          for (const p of m.sum.dataPoints ?? [])
            keep(
              delta
                ? point(p, "counter", pointValue(p), intervalOf(p.startTimeUnixNano, p.timeUnixNano))
                : point(p, "gauge", pointValue(p), 0, {
                    "iii.otlp.sum": m.sum.isMonotonic === true ? "cumulative" : "updown"
                  })
            )
        }
        for (const p of m.histogram?.dataPoints ?? []) {
          const extra: Attributes = {}
          if (p.sum !== undefined) extra["iii.otlp.histogram.sum"] = p.sum
          if (p.min !== undefined) extra["iii.otlp.histogram.min"] = p.min
          if (p.max !== undefined) extra["iii.otlp.histogram.max"] = p.max
          // The buckets as sent (the model's sketch needs values, not bucket counts): JSON text.
          if (p.bucketCounts !== undefined && p.bucketCounts.length > 0)
            extra["iii.otlp.histogram.buckets"] = JSON.stringify({
              bounds: p.explicitBounds ?? [],
              counts: p.bucketCounts.map((c) => Number(Otlp.int64(c)))
            })
          if (m.histogram?.aggregationTemporality !== DELTA) extra["iii.otlp.histogram"] = "cumulative"
          keep(
            point(
              p,
              "distribution",
              Number(Otlp.int64(p.count) ?? 0n),
              intervalOf(p.startTimeUnixNano, p.timeUnixNano),
              extra
            )
          )
        }
        const unsupported =
          (m.exponentialHistogram?.dataPoints?.length ?? 0) + (m.summary?.dataPoints?.length ?? 0)
        if (unsupported > 0) {
          out.rejections.add(
            `${name}: exponential histogram and summary points are not stored (iii stores gauges, sums and histograms)`,
            unsupported
          )
          index += unsupported
        }
      }
    }
  return out
}
