/**
 * The Kubernetes External Metrics API (`external.metrics.k8s.io/v1beta1`) view of the RED rollups, so an
 * HPA can scale on latency, error rate or request rate. Pure: selector parsing, service matching and
 * response rendering; the HTTP layer feeds it RED cells.
 *
 * Every value covers the last `windowSeconds` (60 s): the six 10 s rollup buckets ending with the
 * current, partial one. Latencies are milliseconds, `iii_error_rate` is a percentage (0–100, so a
 * `2%` threshold is the target `2`), `iii_request_rate` is requests per second.
 */
import { Either } from "effect"
import { InvalidParameter } from "./Errors.js"
import type { ServiceInfo } from "./Store.js"

export const group = "external.metrics.k8s.io"
export const version = "v1beta1"
export const groupVersion = `${group}/${version}`
export const windowSeconds = 60

export type MetricName =
  | "iii_p50_latency_ms"
  | "iii_p90_latency_ms"
  | "iii_p95_latency_ms"
  | "iii_p99_latency_ms"
  | "iii_error_rate"
  | "iii_request_rate"

export const metricNames: ReadonlyArray<MetricName> = [
  "iii_p50_latency_ms",
  "iii_p90_latency_ms",
  "iii_p95_latency_ms",
  "iii_p99_latency_ms",
  "iii_error_rate",
  "iii_request_rate"
]

export const isMetricName = (name: string): name is MetricName =>
  (metricNames as ReadonlyArray<string>).includes(name)

/** Selector labels understood; `iii.io/service` is an alias of `service`. */
export const labelKeys = ["iii.io/composition", "iii.io/component", "service", "iii.io/service"] as const
export type LabelKey = (typeof labelKeys)[number]

export interface Requirement {
  readonly key: LabelKey
  readonly op: "=" | "!="
  readonly value: string
}

/** Parses a Kubernetes equality-based label selector (`a=b,c!=d`), the form HPAs send for matchLabels. */
export const parseSelector = (
  text: string | undefined
): Either.Either<ReadonlyArray<Requirement>, InvalidParameter> => {
  if (text === undefined || text.trim() === "") return Either.right([])
  const out: Array<Requirement> = []
  for (const part of text.split(",")) {
    const m = /^\s*([A-Za-z0-9._/-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$/.exec(part)
    if (m === null || m[1] === undefined || m[2] === undefined || m[3] === undefined)
      return Either.left(
        new InvalidParameter({
          parameter: "labelSelector",
          reason: `"${part}" is not key=value or key!=value (set-based selectors are not supported)`
        })
      )
    const key = m[1]
    if (!(labelKeys as ReadonlyArray<string>).includes(key))
      return Either.left(
        new InvalidParameter({
          parameter: "labelSelector",
          reason: `unknown label "${key}"; known: ${labelKeys.join(", ")}`
        })
      )
    out.push({ key: key as LabelKey, op: m[2] === "!=" ? "!=" : "=", value: m[3] })
  }
  return Either.right(out)
}

const labelOf = (s: ServiceInfo, key: LabelKey): string | undefined =>
  key === "iii.io/composition" ? s.composition : key === "iii.io/component" ? s.component : s.service

/**
 * Services in the namespace (services whose namespace is unknown match any) satisfying every requirement.
 */
export const matchServices = (
  services: ReadonlyArray<ServiceInfo>,
  namespace: string,
  selector: ReadonlyArray<Requirement>
): ReadonlyArray<ServiceInfo> =>
  services.filter(
    (s) =>
      (s.namespace === undefined || s.namespace === namespace) &&
      selector.every((r) => (labelOf(s, r.key) === r.value) === (r.op === "="))
  )

/** A Kubernetes quantity string: whole numbers plain (`187`), others in milli-units (`250500m`). */
export const formatQuantity = (value: number): string => {
  const milli = Math.round(value * 1000)
  return milli % 1000 === 0 ? String(milli / 1000) : `${milli}m`
}

export interface WindowFigures {
  readonly requests: number
  readonly errors: number
  /** Seconds from the window's first bucket start to now (the current bucket is partial). */
  readonly seconds: number
  /** Latency quantile in ms, or null without requests. */
  readonly quantile: (q: number) => number | null
}

/** The metric's value from the window's figures; 0 when there was no traffic. */
export const metricValue = (metric: MetricName, f: WindowFigures): number => {
  switch (metric) {
    case "iii_request_rate":
      return f.requests / f.seconds
    case "iii_error_rate":
      return f.requests === 0 ? 0 : (100 * f.errors) / f.requests
    case "iii_p50_latency_ms":
      return f.quantile(0.5) ?? 0
    case "iii_p90_latency_ms":
      return f.quantile(0.9) ?? 0
    case "iii_p95_latency_ms":
      return f.quantile(0.95) ?? 0
    case "iii_p99_latency_ms":
      return f.quantile(0.99) ?? 0
  }
}

export interface ExternalMetricValue {
  readonly metricName: string
  readonly metricLabels: Record<string, string>
  readonly timestamp: string
  readonly window: number
  readonly value: string
}

export interface ExternalMetricValueList {
  readonly kind: "ExternalMetricValueList"
  readonly apiVersion: typeof groupVersion
  readonly metadata: Record<string, never>
  readonly items: ReadonlyArray<ExternalMetricValue>
}

/**
 * One item aggregating every matched service (an HPA sums External metric items, so a per-service
 * p99 list would be wrong); no items when the selector matches no known service, which the HPA
 * reports as "no metrics returned" rather than scaling on a made-up zero.
 */
export const render = (
  metric: MetricName,
  selector: ReadonlyArray<Requirement>,
  matched: number,
  figures: WindowFigures,
  now: Date
): ExternalMetricValueList => ({
  kind: "ExternalMetricValueList",
  apiVersion: groupVersion,
  metadata: {},
  items:
    matched === 0
      ? []
      : [
          {
            metricName: metric,
            metricLabels: Object.fromEntries(
              selector.filter((r) => r.op === "=").map((r) => [r.key, r.value])
            ),
            timestamp: now.toISOString().replace(/\.\d{3}Z$/, "Z"),
            window: windowSeconds,
            value: formatQuantity(metricValue(metric, figures))
          }
        ]
})

/** `GET /apis/external.metrics.k8s.io/v1beta1`: the discovery document the aggregator reads. */
export const apiResourceList = () => ({
  kind: "APIResourceList",
  apiVersion: "v1",
  groupVersion,
  resources: metricNames.map((name) => ({
    name,
    singularName: "",
    namespaced: true,
    kind: "ExternalMetricValueList",
    verbs: ["get"]
  }))
})

/** `GET /apis/external.metrics.k8s.io`: the API group. */
export const apiGroup = () => ({
  kind: "APIGroup",
  apiVersion: "v1",
  name: group,
  versions: [{ groupVersion, version }],
  preferredVersion: { groupVersion, version }
})
