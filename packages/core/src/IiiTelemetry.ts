/**
 * One Layer that sends an Effect app's spans, logs and metrics to an iii obs node over OTLP/HTTP,
 * through `@effect/opentelemetry`'s `Otlp` exporter: Effect's own tracer and logger, no OpenTelemetry
 * SDK and no second tracer. Imported as `@iii/core/IiiTelemetry` (not from the package index), so an
 * app that does not use it needs neither `@effect/opentelemetry` nor `@effect/platform`.
 */

import * as Otlp from "@effect/opentelemetry/Otlp"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import { type Duration, Layer, Redacted } from "effect"

export interface Options {
  /** The obs node's URL, e.g. `http://127.0.0.1:4320`: spans go to `{obs}/v1/traces`, logs to `/v1/logs`. */
  readonly obs: string
  /** OpenTelemetry's `service.name`: iii's service for the app's spans and logs. */
  readonly serviceName: string
  readonly serviceVersion?: string
  /** The node's bearer token, when it has one. */
  readonly token?: Redacted.Redacted | undefined
  /** More resource attributes, e.g. `k8s.pod.name`, `k8s.namespace.name` (iii's pod identity). */
  readonly attributes?: Record<string, unknown>
  /** How often batches are sent (default 5 seconds); whatever is left is sent when the layer is released. */
  readonly exportInterval?: Duration.DurationInput
}

/**
 * Provides Effect's `Tracer` (so `Effect.withSpan` and `@effect/platform`'s HTTP server and client
 * spans are exported) and adds a logger exporting `Effect.log*` records with the current span's ids.
 * Protobuf over `fetch`: the exporter's own requests are not traced and do not use the app's HttpClient.
 */
export const layer = (options: Options): Layer.Layer<never> =>
  Otlp.layerProtobuf({
    baseUrl: options.obs.replace(/\/+$/, ""),
    resource: {
      serviceName: options.serviceName,
      ...(options.serviceVersion !== undefined && { serviceVersion: options.serviceVersion }),
      ...(options.attributes !== undefined && { attributes: options.attributes })
    },
    ...(options.token !== undefined && {
      headers: { authorization: `Bearer ${Redacted.value(options.token)}` }
    }),
    ...(options.exportInterval !== undefined && {
      tracerExportInterval: options.exportInterval,
      loggerExportInterval: options.exportInterval,
      metricsExportInterval: options.exportInterval
    })
  }).pipe(Layer.provide(FetchHttpClient.layer))
