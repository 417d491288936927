/**
 * The telemetry model's conventions that are plain values, not schemas: log levels and their
 * OpenTelemetry severity numbers, HTTP status classes, the OpenTelemetry names of the model's fields.
 * `Telemetry` re-exports them beside its schemas; they live apart so that the node agent uses them
 * without loading `effect/Schema` and the `fast-check` it brings (packages/agent README, "Memory").
 */

/** severity_text values, lowercased, from the least severe. */
export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal"] as const
export type LogLevel = (typeof logLevels)[number]

/** OpenTelemetry severity numbers: TRACE=1, DEBUG=5, INFO=9, WARN=13, ERROR=17, FATAL=21. */
export const severityNumber: Record<LogLevel, number> = {
  trace: 1,
  debug: 5,
  info: 9,
  warn: 13,
  error: 17,
  fatal: 21
}

/** How each model field is named in OpenTelemetry semantic conventions (OTLP mapping). */
export const otelAttributeNames = {
  service: "service.name",
  component: "iii.component",
  composition: "iii.composition",
  namespace: "k8s.namespace.name",
  pod: "k8s.pod.name",
  correlationId: "iii.correlation_id",
  "http.method": "http.request.method",
  "http.route": "http.route",
  "http.path": "url.path",
  "http.statusCode": "http.response.status_code",
  peerAddress: "network.peer.address",
  peerPort: "network.peer.port",
  stream: "log.iostream"
} as const

/** `2xx`…`5xx` bucket of an HTTP status; `none` when no response was seen. */
export type StatusClass = "1xx" | "2xx" | "3xx" | "4xx" | "5xx" | "none"

export const statusClass = (statusCode: number | undefined): StatusClass =>
  statusCode === undefined || statusCode < 100 || statusCode > 599
    ? "none"
    : (`${Math.floor(statusCode / 100)}xx` as StatusClass)
