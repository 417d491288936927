/**
 * HTTP exchanges → spans. Shared by eBPF mode (exchanges reassembled from syscalls) and proxy mode
 * (exchanges the proxy handled itself), so both produce identical spans.
 *
 * Trace context:
 *   - server span: a child of the request's valid `traceparent` (W3C), otherwise the root of a new
 *     trace; correlation id = `x-iii-correlation-id` when valid, otherwise the trace id.
 *   - client span (an outbound call): in the trace of its `traceparent` when the app propagated one;
 *     otherwise in the trace of the server span it was made for, when linked (see below); otherwise
 *     a new trace. Its parent is the linked server span when in the same trace, else the propagated
 *     parent id.
 *   - linking (best effort): an outbound call made by a thread that is serving exactly one inbound
 *     request at that moment is attributed to that request. Event-loop servers (Node.js) serving
 *     several requests concurrently on one thread cannot be disambiguated from syscalls alone, so
 *     their outbound calls are not linked unless the app propagates `traceparent` itself.
 * Errors: a server span is an error on 5xx or no response; a client span on 4xx, 5xx or no response.
 */

import { type Telemetry, TraceContext } from "@iii/core"
import { Option } from "effect"
import type { Outcome, Role } from "./ConnectionTracker.js"
import type { MessageHead } from "./HttpParser.js"

/** Who produced the telemetry: `service.name` and, in Kubernetes, its pod and composition. */
export interface Identity {
  readonly service: string
  readonly component?: string
  readonly composition?: string
  readonly namespace?: string
  readonly pod?: string
}

/** A span's place in its trace, decided when the request starts (so logs and calls can join it). */
export interface SpanContext {
  readonly traceId: Telemetry.TraceId
  readonly spanId: Telemetry.SpanId
  readonly parentSpanId: Telemetry.SpanId | undefined
  readonly correlationId: string
  /** `trace-flags` to propagate (sampled kept from the caller). */
  readonly flags: number
}

type HeaderValue = string | ReadonlyArray<string> | undefined

/** The trace headers of a request, however they were read (repeated headers as arrays). */
export interface TraceHeaders {
  readonly traceparent: HeaderValue
  readonly correlationId: HeaderValue
}

export const serverContext = (headers: TraceHeaders): SpanContext => {
  const parent = TraceContext.parseTraceParent(headers.traceparent)
  const self = Option.match(parent, { onNone: () => TraceContext.root(), onSome: TraceContext.child })
  return {
    traceId: self.traceId,
    spanId: self.spanId,
    parentSpanId: Option.isSome(parent) ? parent.value.spanId : undefined,
    correlationId: TraceContext.correlationIdFor(self.traceId, headers.correlationId),
    flags: self.flags
  }
}

export const clientContext = (headers: TraceHeaders, linked: SpanContext | undefined): SpanContext => {
  const propagated = Option.getOrUndefined(TraceContext.parseTraceParent(headers.traceparent))
  const traceId = propagated?.traceId ?? linked?.traceId ?? TraceContext.newTraceId()
  const parentSpanId = linked !== undefined && linked.traceId === traceId ? linked.spanId : propagated?.spanId
  const header = TraceContext.parseCorrelationId(headers.correlationId)
  return {
    traceId,
    spanId: TraceContext.newSpanId(),
    parentSpanId,
    correlationId: Option.getOrElse(header, () =>
      linked !== undefined && linked.traceId === traceId ? linked.correlationId : traceId
    ),
    flags: propagated?.flags ?? linked?.flags ?? TraceContext.FLAG_SAMPLED
  }
}

const knownMethods = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"])

/** OpenTelemetry's rule: methods outside the standard set are reported as `_OTHER` in names and metrics. */
export const normaliseMethod = (method: string): string => (knownMethods.has(method) ? method : "_OTHER")

export interface ExchangeRecord {
  readonly role: Role
  readonly context: SpanContext
  readonly request: MessageHead
  readonly statusCode: number | undefined
  readonly startNs: bigint
  readonly endNs: bigint
  readonly outcome: Outcome
  readonly peerAddress: string | undefined
  readonly peerPort: number | undefined
}

export const isError = (role: Role, statusCode: number | undefined, outcome: Outcome): boolean =>
  outcome === "no_response" || statusCode === undefined || statusCode >= (role === "server" ? 500 : 400)

export const toSpan = (identity: Identity, record: ExchangeRecord, route: string): Telemetry.Span => {
  const method = normaliseMethod(record.request.method)
  const attributes: Record<string, string | number | boolean> = {}
  if (record.outcome !== "complete") attributes["iii.outcome"] = record.outcome
  if (record.request.truncated) attributes["iii.request_head_truncated"] = true
  if (method === "_OTHER") attributes["http.request.method_original"] = record.request.method
  if (record.role === "client" && record.request.host !== undefined)
    attributes["server.address"] = record.request.host
  const path = record.request.target
  return {
    traceId: record.context.traceId,
    spanId: record.context.spanId,
    ...(record.context.parentSpanId === undefined ? {} : { parentSpanId: record.context.parentSpanId }),
    correlationId: record.context.correlationId,
    ...identity,
    kind: record.role,
    name: `${method} ${route}`,
    startTimeUnixNano: record.startNs,
    durationNano: Number(record.endNs - record.startNs),
    http: {
      method,
      route,
      path: path.length > 2048 ? path.slice(0, 2048) : path,
      ...(record.statusCode === undefined ? {} : { statusCode: record.statusCode })
    },
    ...(record.peerAddress === undefined ? {} : { peerAddress: record.peerAddress }),
    ...(record.peerPort === undefined ? {} : { peerPort: record.peerPort }),
    error: isError(record.role, record.statusCode, record.outcome),
    ...(Object.keys(attributes).length === 0 ? {} : { attributes })
  }
}
