/**
 * The ingest write path: applies many agent batches inside one LMDB write transaction (group commit).
 * Runs synchronously inside lmdb's transaction callback, so reads here see this transaction's writes.
 */
import { Telemetry } from "@iii/core"
import type { IngestBatch, WriteOutcome } from "../Store.js"
import {
  correlationKey,
  logCorrelationKey,
  micros,
  routeOf,
  type ServiceInfoValue,
  serviceKey,
  spanKey,
  statusIndexed,
  statusKey
} from "./Keys.js"
import type { Layout } from "./LmdbLayout.js"
import { RedDeltas } from "./Red.js"

/** How stale a service's `lastSeen` may get before a write refreshes it (keeps writes rare). */
const lastSeenRefreshNano = 10_000_000_000n

export interface WriteState {
  /** The last ServiceInfoValue written per service, to skip redundant writes. */
  readonly services: Map<string, ServiceInfoValue>
}

export const makeWriteState = (layout: Layout): WriteState => {
  const services = new Map<string, ServiceInfoValue>()
  for (const { key, value } of layout.services.getRange()) services.set(key, value)
  return { services }
}

export const applyBatches = (
  layout: Layout,
  state: WriteState,
  batches: ReadonlyArray<IngestBatch>
): ReadonlyArray<WriteOutcome> => {
  const red = new RedDeltas()
  const highWater = new Map<string, number>()
  const outcomes: Array<WriteOutcome> = []
  for (const batch of batches) {
    const previous = highWater.get(batch.agentId) ?? layout.agents.get(batch.agentId) ?? 0
    if (batch.seq <= previous) {
      outcomes.push("duplicate")
      continue
    }
    highWater.set(batch.agentId, batch.seq)
    for (const span of batch.spans) writeSpan(layout, state, red, span)
    batch.logs.forEach((log, index) => {
      const time = micros(log.timeUnixNano)
      const ck = logCorrelationKey(log)
      layout.logs.put([ck, time, batch.agentId, batch.seq, index], log)
      layout.logsByTime.put([time, batch.agentId, batch.seq, index], ck)
    })
    batch.metrics.forEach((point, index) => {
      layout.metrics.put([micros(point.timeUnixNano), batch.agentId, batch.seq, index], point)
    })
    outcomes.push("stored")
  }
  for (const [agentId, seq] of highWater) layout.agents.put(agentId, seq)
  red.flush(layout.red)
  return outcomes
}

const writeSpan = (layout: Layout, state: WriteState, red: RedDeltas, span: Telemetry.Span) => {
  const statusCode = span.http?.statusCode ?? 0
  const route = routeOf(span)
  layout.spans.put(spanKey(span), span)
  layout.byService.put(serviceKey(span), [
    route,
    statusCode,
    span.durationNano,
    span.error ? 1 : 0,
    span.correlationId === span.traceId ? "" : span.correlationId
  ])
  const cls = Telemetry.statusClass(span.http?.statusCode)
  if (statusIndexed(cls)) layout.byStatus.put(statusKey(span, cls), [span.service, route])
  // Most spans are correlated by their own trace id, which the spans table already answers.
  if (span.correlationId !== span.traceId) layout.byCorrelation.put(correlationKey(span), 1)
  if (span.kind === "server") {
    red.add(span.service, route, span.startTimeUnixNano, span.durationNano, span.error)
  }
  const known = state.services.get(span.service)
  if (
    known === undefined ||
    span.startTimeUnixNano - known.lastSeenUnixNano > lastSeenRefreshNano ||
    (span.component !== undefined && known.component !== span.component) ||
    (span.composition !== undefined && known.composition !== span.composition) ||
    (span.namespace !== undefined && known.namespace !== span.namespace)
  ) {
    const info: ServiceInfoValue = {
      ...known,
      ...(span.component !== undefined && { component: span.component }),
      ...(span.composition !== undefined && { composition: span.composition }),
      ...(span.namespace !== undefined && { namespace: span.namespace }),
      lastSeenUnixNano:
        known !== undefined && known.lastSeenUnixNano > span.startTimeUnixNano
          ? known.lastSeenUnixNano
          : span.startTimeUnixNano
    }
    state.services.set(span.service, info)
    layout.services.put(span.service, info)
  }
}
