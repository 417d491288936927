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

import type { Telemetry } from "@iii/core"
import * as TraceContext from "@iii/core/TraceContext"
import * as Option from "effect/Option"
import type { Outcome, Role } from "./ConnectionTracker.js"
import type { MessageHead } from "./HttpParser.js"

/** Who produced the telemetry: `service.name` and, in Kubernetes, its pod and composition. */
export interface Identity {
  readonly service: string
  readonly component?: string
  readonly composition?: string
  readonly namespace?: string
  readonly pod?: string
  /** k8s.container.name. The telemetry model has no field for it: an attribute of every item. */
  readonly container?: string
  /** k8s.node.name, likewise. */
  readonly node?: string
}

/** The resource fields of an identity, as spans, metric points and log records carry them. */
export const resourceOf = (
  identity: Identity
): Pick<Telemetry.Span, "service" | "component" | "composition" | "namespace" | "pod"> => {
  const resource: {
    -readonly [K in "service" | "component" | "composition" | "namespace" | "pod"]?: string
  } & {
    service: string
  } = { service: identity.service }
  if (identity.component !== undefined) resource.component = identity.component
  if (identity.composition !== undefined) resource.composition = identity.composition
  if (identity.namespace !== undefined) resource.namespace = identity.namespace
  if (identity.pod !== undefined) resource.pod = identity.pod
  return resource
}

/** What an identity adds to every item's attributes (container and node), or undefined. */
export const identityAttributes = (identity: Identity): Telemetry.Attributes | undefined =>
  identity.container === undefined && identity.node === undefined
    ? undefined
    : {
        ...(identity.container === undefined ? {} : { "k8s.container.name": identity.container }),
        ...(identity.node === undefined ? {} : { "k8s.node.name": identity.node })
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

/** The ids the kernel gave a request (trace propagation: `TraceEvent`). */
export interface KernelIds {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly flags: number
}

const validIds = (ids: KernelIds): boolean =>
  TraceContext.isTraceId(ids.traceId) &&
  TraceContext.isSpanId(ids.spanId) &&
  (ids.parentSpanId === undefined || TraceContext.isSpanId(ids.parentSpanId))

/**
 * A server span with the ids the kernel gave its request (its thread's outbound calls carry them as
 * their parent), when they agree with the request's own `traceparent` as `serverContext` reads it;
 * undefined otherwise (e.g. a version other than 00, which the kernel does not read).
 */
export const kernelServerContext = (headers: TraceHeaders, ids: KernelIds): SpanContext | undefined => {
  if (!validIds(ids)) return undefined
  const parent = Option.getOrUndefined(TraceContext.parseTraceParent(headers.traceparent))
  const agrees =
    parent === undefined
      ? ids.parentSpanId === undefined
      : parent.traceId === ids.traceId && parent.spanId === ids.parentSpanId
  if (!agrees) return undefined
  const traceId = ids.traceId as Telemetry.TraceId
  return {
    traceId,
    spanId: ids.spanId as Telemetry.SpanId,
    parentSpanId: ids.parentSpanId as Telemetry.SpanId | undefined,
    correlationId: TraceContext.correlationIdFor(traceId, headers.correlationId),
    flags: ids.flags
  }
}

/**
 * A client span for a request the kernel inserted a `traceparent` into (it had none of its own):
 * what went on the wire, so that it is the parent of the server span downstream. Its correlation id
 * is the request's own header, else the one inserted (the trace id).
 */
export const injectedClientContext = (headers: TraceHeaders, ids: KernelIds): SpanContext | undefined => {
  if (!validIds(ids)) return undefined
  const traceId = ids.traceId as Telemetry.TraceId
  return {
    traceId,
    spanId: ids.spanId as Telemetry.SpanId,
    parentSpanId: ids.parentSpanId as Telemetry.SpanId | undefined,
    correlationId: Option.getOrElse(TraceContext.parseCorrelationId(headers.correlationId), () => traceId),
    flags: ids.flags
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

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/** Builds the span field by field: this runs once per request, so no temporary objects. */
export const toSpan = (
  identity: Identity,
  record: ExchangeRecord,
  route: string,
  /** `identityAttributes(identity)`, computed once per identity. */
  shared: Telemetry.Attributes | undefined = identityAttributes(identity)
): Telemetry.Span => {
  const request = record.request
  const method = normaliseMethod(request.method)
  const path = request.target
  const http: Mutable<Telemetry.HttpInfo> = {
    method,
    route,
    path: path.length > 2048 ? path.slice(0, 2048) : path
  }
  // The parser reads any three digits; obs refuses a status outside 100-599 (and with it the whole
  // batch), so one odd response is sent without a status instead.
  if (record.statusCode !== undefined && record.statusCode <= 599) http.statusCode = record.statusCode
  const span: Mutable<Telemetry.Span> = {
    traceId: record.context.traceId,
    spanId: record.context.spanId,
    correlationId: record.context.correlationId,
    service: identity.service,
    kind: record.role,
    name: `${method} ${route}`,
    startTimeUnixNano: record.startNs,
    durationNano: Number(record.endNs - record.startNs),
    http,
    error: isError(record.role, record.statusCode, record.outcome)
  }
  if (record.context.parentSpanId !== undefined) span.parentSpanId = record.context.parentSpanId
  if (identity.component !== undefined) span.component = identity.component
  if (identity.composition !== undefined) span.composition = identity.composition
  if (identity.namespace !== undefined) span.namespace = identity.namespace
  if (identity.pod !== undefined) span.pod = identity.pod
  if (record.peerAddress !== undefined) span.peerAddress = record.peerAddress
  if (record.peerPort !== undefined) span.peerPort = record.peerPort
  const outcome = record.outcome !== "complete"
  const clientHost = record.role === "client" && request.host !== undefined
  if (outcome || request.truncated || method === "_OTHER" || clientHost) {
    const attributes: Record<string, string | number | boolean> = { ...shared }
    if (outcome) attributes["iii.outcome"] = record.outcome
    if (request.truncated) attributes["iii.request_head_truncated"] = true
    if (method === "_OTHER") attributes["http.request.method_original"] = request.method
    if (clientHost && request.host !== undefined) attributes["server.address"] = request.host
    span.attributes = attributes
  } else if (shared !== undefined) {
    span.attributes = shared
  }
  return span
}
