/**
 * The agent's own accounting as metric points, sent with the RED metrics every interval: obs stores
 * them beside the apps' metrics, so a dashboard or an alert sees an agent that drops requests, and
 * why, without reading its log. Counters of the interval (deltas), named `iii.agent.*`:
 *
 * - `iii.agent.spans`: requests that became spans;
 * - `iii.agent.requests.dropped`, attribute `iii.drop.reason` (`ring_full`, `unparsed`, `shutdown`,
 *   `export`): requests that did not (see packages/agent README, "Accounting");
 * - `iii.agent.capture.records_lost`: records the kernel ring could not take (eBPF).
 */
import type { Telemetry } from "@iii/core"

/** Cumulative counts, as the agent's stats give them. */
export interface Totals {
  readonly spans: number
  readonly ring_full: number
  readonly unparsed: number
  readonly shutdown: number
  readonly export: number
  readonly recordsLost: number
}

export const zero: Totals = { spans: 0, ring_full: 0, unparsed: 0, shutdown: 0, export: 0, recordsLost: 0 }

/** The points for the interval between `previous` and `current`. Pure. */
export const points = (
  resource: Pick<Telemetry.MetricPoint, "service" | "pod" | "namespace" | "composition" | "component">,
  previous: Totals,
  current: Totals,
  timeUnixNano: bigint,
  intervalNano: number
): Array<Telemetry.MetricPoint> => {
  const counter = (
    name: string,
    value: number,
    attributes?: Telemetry.Attributes
  ): Telemetry.MetricPoint => ({
    ...resource,
    name,
    kind: "counter",
    timeUnixNano,
    intervalNano,
    value,
    ...(attributes === undefined ? {} : { attributes })
  })
  const reasons = ["ring_full", "unparsed", "shutdown", "export"] as const
  return [
    counter("iii.agent.spans", current.spans - previous.spans),
    ...reasons.map((reason) =>
      counter("iii.agent.requests.dropped", current[reason] - previous[reason], { "iii.drop.reason": reason })
    ),
    counter("iii.agent.capture.records_lost", current.recordsLost - previous.recordsLost)
  ]
}
