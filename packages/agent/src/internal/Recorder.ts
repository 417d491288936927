/**
 * Turns finished HTTP exchanges into telemetry: a span to the sink, a sample in the RED metrics, the
 * route through the bounded route table. Shared by eBPF mode and proxy mode.
 */
import type { Telemetry } from "@iii/core"
import type { Role } from "./ConnectionTracker.js"
import { RedMetrics } from "./RedMetrics.js"
import { RouteTable } from "./Routes.js"
import { type ExchangeRecord, type Identity, identityAttributes, normaliseMethod, toSpan } from "./Spans.js"

export interface SpanSink {
  span(span: Telemetry.Span): void
}

export class Recorder {
  readonly red: RedMetrics
  private readonly routes: Record<Role, RouteTable>
  private readonly shared: Telemetry.Attributes | undefined
  spans = 0

  constructor(
    readonly identity: Identity,
    private readonly sink: SpanSink,
    startNs: bigint,
    maxRoutes?: number
  ) {
    this.red = new RedMetrics(identity, startNs)
    this.shared = identityAttributes(identity)
    this.routes = { server: new RouteTable(maxRoutes), client: new RouteTable(maxRoutes) }
  }

  record(exchange: ExchangeRecord): Telemetry.Span {
    const route = this.routes[exchange.role].route(exchange.request.target)
    const span = toSpan(this.identity, exchange, route, this.shared)
    this.spans++
    this.red.recordRequest(
      exchange.role,
      normaliseMethod(exchange.request.method),
      route,
      exchange.statusCode,
      span.durationNano
    )
    this.sink.span(span)
    return span
  }
}
