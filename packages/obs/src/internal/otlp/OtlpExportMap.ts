/**
 * iii's telemetry model as OTLP export requests (the reverse of `OtlpMap`): pure functions, one per
 * signal, giving the request in the shape `OtlpProto.encodeRequest` takes. Items are grouped by their
 * resource (service, component, composition, namespace, pod → `service.name`, `iii.component`,
 * `iii.composition`, `k8s.namespace.name`, `k8s.pod.name`); the fields the ingest mapping took out of
 * the attributes go back in under their semantic-convention names (`http.request.method`,
 * `http.route`, `url.path`, `http.response.status_code`, `network.peer.address`/`port`,
 * `log.iostream`, `iii.correlation_id` when it is not the trace id). 64-bit integers are decimal strings.
 */
import { Telemetry } from "@iii/core"

type Value = { stringValue: string } | { boolValue: boolean } | { intValue: string } | { doubleValue: number }
interface KeyValue {
  readonly key: string
  readonly value: Value
}

const anyValue = (v: string | number | boolean): Value =>
  typeof v === "string"
    ? { stringValue: v }
    : typeof v === "boolean"
      ? { boolValue: v }
      : Number.isSafeInteger(v)
        ? { intValue: String(v) }
        : { doubleValue: v }

const keyValues = (a: Telemetry.Attributes | undefined, extra: Telemetry.Attributes = {}): Array<KeyValue> =>
  Object.entries({ ...a, ...extra }).map(([key, v]) => ({ key, value: anyValue(v) }))

const bytes = (hex: string | undefined): Buffer | undefined =>
  hex === undefined ? undefined : Buffer.from(hex, "hex")

type Resourced = Pick<Telemetry.Span, "service" | "component" | "composition" | "namespace" | "pod">

const resourceOf = (r: Resourced) => {
  const a: Record<string, string> = { "service.name": r.service }
  if (r.component !== undefined) a["iii.component"] = r.component
  if (r.composition !== undefined) a["iii.composition"] = r.composition
  if (r.namespace !== undefined) a["k8s.namespace.name"] = r.namespace
  if (r.pod !== undefined) a["k8s.pod.name"] = r.pod
  return { attributes: keyValues(a) }
}

/** Items grouped by resource, in first-seen order. */
const byResource = <A extends Resourced>(items: ReadonlyArray<A>): Array<[Resourced, Array<A>]> => {
  const groups = new Map<string, [Resourced, Array<A>]>()
  for (const item of items) {
    const key = JSON.stringify([item.service, item.component, item.composition, item.namespace, item.pod])
    const group = groups.get(key)
    if (group === undefined) groups.set(key, [item, [item]])
    else group[1].push(item)
  }
  return [...groups.values()]
}

const scope = { name: "iii.obs" }

const spanKinds: Readonly<Record<Telemetry.SpanKind, number>> = {
  internal: 1,
  server: 2,
  client: 3,
  producer: 4,
  consumer: 5
}

const spanOf = (s: Telemetry.Span) => {
  const extra: Record<string, string | number | boolean> = {}
  if (s.http !== undefined) {
    extra["http.request.method"] = s.http.method
    extra["http.route"] = s.http.route
    if (s.http.path !== undefined) extra["url.path"] = s.http.path
    if (s.http.statusCode !== undefined) extra["http.response.status_code"] = s.http.statusCode
  }
  if (s.peerAddress !== undefined) extra["network.peer.address"] = s.peerAddress
  if (s.peerPort !== undefined) extra["network.peer.port"] = s.peerPort
  if (s.correlationId !== s.traceId) extra["iii.correlation_id"] = s.correlationId
  const status = s.status ?? (s.error ? { code: "error" as const } : undefined)
  return {
    traceId: bytes(s.traceId),
    spanId: bytes(s.spanId),
    parentSpanId: bytes(s.parentSpanId),
    name: s.name,
    kind: spanKinds[s.kind],
    startTimeUnixNano: String(s.startTimeUnixNano),
    endTimeUnixNano: String(s.startTimeUnixNano + BigInt(s.durationNano)),
    attributes: keyValues(s.attributes, extra),
    status:
      status === undefined ? undefined : { code: status.code === "ok" ? 1 : 2, message: status.message },
    events: s.events?.map((e) => ({
      timeUnixNano: String(e.timeUnixNano),
      name: e.name,
      attributes: keyValues(e.attributes)
    })),
    links: s.links?.map((l) => ({
      traceId: bytes(l.traceId),
      spanId: bytes(l.spanId),
      attributes: keyValues(l.attributes)
    }))
  }
}

export const tracesRequest = (spans: ReadonlyArray<Telemetry.Span>) => ({
  resourceSpans: byResource(spans).map(([r, items]) => ({
    resource: resourceOf(r),
    scopeSpans: [{ scope, spans: items.map(spanOf) }]
  }))
})

const logOf = (l: Telemetry.LogRecord) => {
  const extra: Record<string, string> = {}
  if (l.stream !== undefined) extra["log.iostream"] = l.stream
  if (l.correlationId !== undefined) extra["iii.correlation_id"] = l.correlationId
  return {
    timeUnixNano: String(l.timeUnixNano),
    severityNumber: Telemetry.severityNumber[l.level],
    severityText: l.level.toUpperCase(),
    body: { stringValue: l.body },
    attributes: keyValues(l.attributes, extra),
    traceId: bytes(l.traceId),
    spanId: bytes(l.spanId)
  }
}

export const logsRequest = (logs: ReadonlyArray<Telemetry.LogRecord>) => ({
  resourceLogs: byResource(logs).map(([r, items]) => ({
    resource: resourceOf(r),
    scopeLogs: [{ scope, logRecords: items.map(logOf) }]
  }))
})

const DELTA = 1

/** One metric per point: counters as monotonic delta sums, gauges as gauges, distributions as histograms (count and sum). */
const metricOf = (p: Telemetry.MetricPoint) => {
  const time = String(p.timeUnixNano)
  const start = String(p.timeUnixNano - BigInt(p.intervalNano))
  const attributes = keyValues(p.attributes)
  switch (p.kind) {
    case "gauge":
      return { name: p.name, gauge: { dataPoints: [{ attributes, timeUnixNano: time, asDouble: p.value }] } }
    case "counter":
      return {
        name: p.name,
        sum: {
          aggregationTemporality: DELTA,
          isMonotonic: true,
          dataPoints: [{ attributes, startTimeUnixNano: start, timeUnixNano: time, asDouble: p.value }]
        }
      }
    case "distribution":
      return {
        name: p.name,
        histogram: {
          aggregationTemporality: DELTA,
          dataPoints: [
            {
              attributes,
              startTimeUnixNano: start,
              timeUnixNano: time,
              count: String(Math.max(0, Math.round(p.value))),
              sum: p.sketch?.sum
            }
          ]
        }
      }
  }
}

export const metricsRequest = (points: ReadonlyArray<Telemetry.MetricPoint>) => ({
  resourceMetrics: byResource(points).map(([r, items]) => ({
    resource: resourceOf(r),
    scopeMetrics: [{ scope, metrics: items.map(metricOf) }]
  }))
})
