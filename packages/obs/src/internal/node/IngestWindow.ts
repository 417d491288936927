/**
 * What ingest accepts in time and status, as the OpenTelemetry Collector and Tempo bound their
 * ingestion windows: a span starts within [now − retention, now + max skew] and has ended by
 * now + max skew (which bounds its duration), and its HTTP status, when it has one, is 100–599; logs
 * and metric points are dated within the same window. Data outside it would never be deleted by
 * retention (dated in the future), or would be deleted at once (older than retention), or would
 * sort first in every search. A batch holding such an item is refused whole as `invalid_batch`,
 * naming the item, before it joins a commit.
 */
import type { Telemetry } from "@iii/core"

export interface Window {
  /** Items older than this (ns) before now are refused: retention would delete them at once. */
  readonly retentionNano: bigint
  /** Items dated more than this (ns) after now are refused: the sender's clock is off. */
  readonly maxSkewNano: bigint
}

/** What the window looks at in a batch. */
export interface Dated {
  readonly spans: ReadonlyArray<Telemetry.Span>
  readonly logs: ReadonlyArray<Telemetry.LogRecord>
  readonly metrics: ReadonlyArray<Telemetry.MetricPoint>
}

const iso = (nano: number) => {
  const date = new Date(nano / 1e6)
  return Number.isNaN(date.getTime()) ? `${nano} ns` : date.toISOString()
}

const hours = (nano: number) => `${(nano / 3.6e12).toFixed(1)} h`

/**
 * Undefined when every item fits; otherwise the first misfit, as `path: reason`. Times are compared
 * as doubles (a few hundred ns of rounding at today's dates), so the check costs a few ns per span.
 */
export const misfit = (batch: Dated, nowNano: bigint, window: Window): string | undefined => {
  const now = Number(nowNano)
  const earliest = now - Number(window.retentionNano)
  const latest = now + Number(window.maxSkewNano)
  const place = (path: string, at: number) =>
    at < earliest
      ? `${path}: ${iso(at)} is older than this node keeps (retention ${hours(now - earliest)})`
      : at > latest
        ? `${path}: ${iso(at)} is ${hours(at - now)} ahead of this node's clock (${iso(now)}; at most ${hours(latest - now)})`
        : undefined
  const spans = batch.spans
  for (let i = 0; i < spans.length; i++) {
    const span = spans[i] as Telemetry.Span
    const start = Number(span.startTimeUnixNano)
    if (start < earliest || start > latest) return place(`spans[${i}].startTimeUnixNano`, start)
    const end = start + span.durationNano
    if (end > latest)
      return `spans[${i}].durationNano: the span would end at ${iso(end)}, ${hours(end - now)} ahead of this node's clock (at most ${hours(latest - now)})`
    const status = span.http?.statusCode
    if (status !== undefined && (status < 100 || status > 599))
      return `spans[${i}].http.statusCode: ${status} is not an HTTP status (100-599)`
  }
  for (let i = 0; i < batch.logs.length; i++) {
    const at = Number((batch.logs[i] as Telemetry.LogRecord).timeUnixNano)
    if (at < earliest || at > latest) return place(`logs[${i}].timeUnixNano`, at)
  }
  for (let i = 0; i < batch.metrics.length; i++) {
    const at = Number((batch.metrics[i] as Telemetry.MetricPoint).timeUnixNano)
    if (at < earliest || at > latest) return place(`metrics[${i}].timeUnixNano`, at)
  }
  return undefined
}

/** The latest span start in a batch (ns), or undefined without spans. */
export const newestStart = (spans: ReadonlyArray<Telemetry.Span>): bigint | undefined => {
  let newest: bigint | undefined
  for (const span of spans)
    if (newest === undefined || span.startTimeUnixNano > newest) newest = span.startTimeUnixNano
  return newest
}
