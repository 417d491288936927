/**
 * RED series as the query API answers them: stored rollup cells (`Store.RedCell`) merged into one
 * summary or grouped into steps, latencies as quantiles of the merged sketches.
 */
import { LatencySketch } from "@iii/core"
import { Either } from "effect"
import { type RedCell, rollupBucketSeconds } from "../../Store.js"

/** The rollup bucket (unix seconds) a span starting at `startUnixNano` falls in. */
export const bucketOf = (startUnixNano: bigint): number => {
  const sec = Number(startUnixNano / 1_000_000_000n)
  return sec - (sec % rollupBucketSeconds)
}

/** One point of a RED series. Latencies in milliseconds; null where the step saw no requests. */
export interface RedPoint {
  /** Step start, unix seconds. */
  readonly time: number
  readonly requests: number
  readonly errors: number
  /** Requests per second over the step. */
  readonly rate: number
  /** errors / requests; 0 when there were none. */
  readonly errorRate: number
  readonly p50: number | null
  readonly p90: number | null
  readonly p95: number | null
  readonly p99: number | null
}

export interface RedSummary {
  readonly requests: number
  readonly errors: number
  readonly sketch: LatencySketch.LatencySketch
}

/** Merges cells (any routes, any buckets) into one summary. */
export const summarize = (cells: Iterable<RedCell>): RedSummary => {
  const sketch = LatencySketch.make()
  let requests = 0
  let errors = 0
  for (const c of cells) {
    const cellSketch = Either.getOrUndefined(LatencySketch.fromData(c.sketch))
    if (cellSketch === undefined) continue // corrupt cell: leave it out rather than report wrong figures
    requests += c.count
    errors += c.errors
    LatencySketch.merge(sketch, cellSketch)
  }
  return { requests, errors, sketch }
}

export const quantileOf = (summary: RedSummary, q: number): number | null => {
  const value = LatencySketch.quantile(summary.sketch, q)
  return Number.isNaN(value) ? null : value
}

/** Groups cells into `stepSec` steps covering [fromSec, toSec); every step appears, empty ones with zeros. */
export const series = (
  cells: ReadonlyArray<RedCell>,
  fromSec: number,
  toSec: number,
  stepSec: number
): ReadonlyArray<RedPoint> => {
  const steps = new Map<number, Array<RedCell>>()
  for (const c of cells) {
    const t = fromSec + Math.floor((c.bucketStartSec - fromSec) / stepSec) * stepSec
    const list = steps.get(t)
    if (list === undefined) steps.set(t, [c])
    else list.push(c)
  }
  const points: Array<RedPoint> = []
  for (let t = fromSec; t < toSec; t += stepSec) {
    const s = summarize(steps.get(t) ?? [])
    points.push({
      time: t,
      requests: s.requests,
      errors: s.errors,
      rate: s.requests / stepSec,
      errorRate: s.requests === 0 ? 0 : s.errors / s.requests,
      p50: quantileOf(s, 0.5),
      p90: quantileOf(s, 0.9),
      p95: quantileOf(s, 0.95),
      p99: quantileOf(s, 0.99)
    })
  }
  return points
}
