/**
 * A mergeable latency histogram with bounded relative error (the DDSketch scheme), in milliseconds.
 *
 * Values fall into logarithmic buckets: bucket `i` holds values in (γ^(i-1), γ^i] with
 * γ = (1 + α) / (1 - α) and α = `relativeAccuracy` = 1%, and reports them as 2γ^i / (γ + 1), which is
 * within α of every value in the bucket. So any quantile is within 1% of the exact one, with no
 * assumption about the distribution, and two sketches merge by adding bucket counts: merging is
 * exact, which is what per-agent sketches rolled up across pods and time need.
 *
 * The bucket layout is fixed (it is what `SketchData.offset` and `counts` mean on the wire and on
 * disk), so every sketch uses the same α. Latencies from 1 ns to ~4 months span ~1,850 buckets; a
 * realistic spread (0.1 ms to 10 s) about 580. Values below `minIndexedValue` (1 ns) count as 0.
 *
 * Built for hot paths: `add` is a logarithm, a bounds check and an array increment; the sketch is a
 * mutable object that grows its bucket array only when a value lands outside the current range.
 * Each operation is both a method (`sketch.add(v)`) and a module function (`LatencySketch.add(sketch, v)`).
 */
import * as Either from "effect/Either"
import { dual } from "effect/Function"
import { InvalidSketch } from "./Errors.js"
import type { SketchData } from "./Telemetry.js"

/** Relative accuracy of every quantile: 1%. */
export const relativeAccuracy = 0.01
const gamma = (1 + relativeAccuracy) / (1 - relativeAccuracy)
const inverseLogGamma = 1 / Math.log(gamma)

/** Smallest value with a bucket of its own: 1 ns. Smaller non-negative values count as 0. */
export const minIndexedValue = 1e-6
/** Largest value with a bucket of its own: 10^10 ms (~116 days). Larger values land in its bucket. */
export const maxIndexedValue = 1e10

const indexOf = (value: number): number => Math.ceil(Math.log(value) * inverseLogGamma)
const minIndex = indexOf(minIndexedValue)
const maxIndex = indexOf(maxIndexedValue)
/** The value a bucket reports: the point within `relativeAccuracy` of both its bounds. */
const bucketValue = (index: number): number => (2 * gamma ** index) / (gamma + 1)

const initialBuckets = 64

export class LatencySketch {
  /** Counts per bucket; `counts[i]` is bucket `offset + i`. Grows on demand. */
  private counts: Float64Array = new Float64Array(0)
  private offset = 0
  private total = 0
  private zeros = 0
  private totalMs = 0

  /** Number of values added. */
  get count(): number {
    return this.total
  }

  /** Exact sum of the values added, in milliseconds. */
  get sum(): number {
    return this.totalMs
  }

  /**
   * Records one value in milliseconds. Returns false, recording nothing, for a negative, NaN or
   * infinite value.
   */
  add(value: number): boolean {
    if (!(value >= 0 && value < Number.POSITIVE_INFINITY)) return false
    this.total++
    this.totalMs += value
    if (value < minIndexedValue) {
      this.zeros++
      return true
    }
    const index = value > maxIndexedValue ? maxIndex : indexOf(value)
    const slot = index - this.offset
    if (slot >= 0 && slot < this.counts.length) {
      this.counts[slot] = (this.counts[slot] ?? 0) + 1
    } else {
      this.grow(index, index)
      this.counts[index - this.offset] = (this.counts[index - this.offset] ?? 0) + 1
    }
    return true
  }

  /** Adds every value recorded in `other` to this sketch (`other` is unchanged). */
  merge(other: LatencySketch): this {
    this.mergeBuckets(other.offset, other.counts, other.total, other.zeros, other.totalMs)
    return this
  }

  /**
   * The value at quantile `q` (0 = min, 0.5 = median, 1 = max): within `relativeAccuracy` of
   * the exact value at rank ⌊q·(count − 1)⌋ in ascending order. NaN when the sketch is empty
   * or `q` is outside [0, 1].
   */
  quantile(q: number): number {
    if (this.total === 0 || !(q >= 0 && q <= 1)) return Number.NaN
    const rank = q * (this.total - 1)
    let seen = this.zeros
    if (seen > rank) return 0
    for (let slot = 0; slot < this.counts.length; slot++) {
      seen += this.counts[slot] ?? 0
      if (seen > rank) return bucketValue(this.offset + slot)
    }
    // Unreachable while the buckets add up to the total (an invariant `fromData` checks).
    return bucketValue(this.offset + this.counts.length - 1)
  }

  /** The sketch as plain data (trimmed to the non-empty bucket range), for the wire and storage. */
  toData(): SketchData {
    let first = 0
    let last = this.counts.length - 1
    while (first <= last && this.counts[first] === 0) first++
    while (last >= first && this.counts[last] === 0) last--
    return {
      count: this.total,
      sum: this.totalMs,
      zeroCount: this.zeros,
      offset: first <= last ? this.offset + first : 0,
      counts: Array.from(this.counts.subarray(first, last + 1))
    }
  }

  /** @internal */
  mergeBuckets(offset: number, counts: ArrayLike<number>, total: number, zeros: number, sum: number): void {
    let first = 0
    let last = counts.length - 1
    while (first <= last && counts[first] === 0) first++
    while (last >= first && counts[last] === 0) last--
    if (first <= last) {
      this.grow(offset + first, offset + last)
      const shift = offset - this.offset
      for (let i = first; i <= last; i++)
        this.counts[shift + i] = (this.counts[shift + i] ?? 0) + (counts[i] ?? 0)
    }
    this.total += total
    this.zeros += zeros
    this.totalMs += sum
  }

  /** Makes buckets `low..high` addressable, keeping slack so a drifting range does not regrow often. */
  private grow(low: number, high: number): void {
    const length = this.counts.length
    if (length > 0 && low >= this.offset && high < this.offset + length) return
    const currentLow = length > 0 ? this.offset : low
    const currentHigh = length > 0 ? this.offset + length - 1 : high
    let newLow = Math.min(low, currentLow)
    let newHigh = Math.max(high, currentHigh)
    const slack = Math.max(initialBuckets, length) >> 1
    if (newLow < currentLow || length === 0) newLow -= slack
    if (newHigh > currentHigh || length === 0) newHigh += slack
    newLow = Math.max(newLow, minIndex)
    newHigh = Math.min(newHigh, maxIndex)
    const counts = new Float64Array(newHigh - newLow + 1)
    if (length > 0) counts.set(this.counts, this.offset - newLow)
    this.counts = counts
    this.offset = newLow
  }
}

/** An empty sketch. */
export const make = (): LatencySketch => new LatencySketch()

/** A sketch of `values` (milliseconds); rejected values (negative, NaN, infinite) are skipped. */
export const fromValues = (values: Iterable<number>): LatencySketch => {
  const sketch = new LatencySketch()
  for (const value of values) sketch.add(value)
  return sketch
}

/** Records `value` (milliseconds) in `sketch`; false, recording nothing, if it is negative, NaN or infinite. */
export const add: {
  (value: number): (sketch: LatencySketch) => boolean
  (sketch: LatencySketch, value: number): boolean
} = dual(2, (sketch: LatencySketch, value: number) => sketch.add(value))

/** Adds every value recorded in `other` to `self`, and returns `self`. */
export const merge: {
  (other: LatencySketch): (self: LatencySketch) => LatencySketch
  (self: LatencySketch, other: LatencySketch): LatencySketch
} = dual(2, (self: LatencySketch, other: LatencySketch) => self.merge(other))

/** See `LatencySketch.quantile`: within 1% of the exact value; NaN when empty or q ∉ [0, 1]. */
export const quantile: {
  (q: number): (sketch: LatencySketch) => number
  (sketch: LatencySketch, q: number): number
} = dual(2, (sketch: LatencySketch, q: number) => sketch.quantile(q))

/** The sketch as plain data, for the wire and storage. */
export const toData = (sketch: LatencySketch): SketchData => sketch.toData()

/**
 * A sketch from its data, checking what a schema cannot: that `count` is `zeroCount` plus the
 * bucket counts, that the buckets exist in the fixed layout, and that `sum` is finite and
 * non-negative. Data from the wire or disk goes through here, so a corrupt sketch is an error
 * rather than wrong quantiles.
 */
export const fromData = (data: SketchData): Either.Either<LatencySketch, InvalidSketch> => {
  const invalid = (reason: string) => Either.left(new InvalidSketch({ reason }))
  let bucketTotal = 0
  for (const c of data.counts) {
    if (!Number.isSafeInteger(c) || c < 0) return invalid(`bucket count ${c} is not a non-negative integer`)
    bucketTotal += c
  }
  if (!Number.isSafeInteger(data.zeroCount) || data.zeroCount < 0) {
    return invalid(`zeroCount ${data.zeroCount} is not a non-negative integer`)
  }
  if (data.count !== data.zeroCount + bucketTotal) {
    return invalid(
      `count ${data.count} is not zeroCount (${data.zeroCount}) plus the bucket counts (${bucketTotal})`
    )
  }
  if (
    data.counts.length > 0 &&
    (!Number.isSafeInteger(data.offset) ||
      data.offset < minIndex ||
      data.offset + data.counts.length - 1 > maxIndex)
  ) {
    return invalid(
      `buckets ${data.offset}..${data.offset + data.counts.length - 1} are outside ${minIndex}..${maxIndex}`
    )
  }
  if (!(data.sum >= 0 && data.sum < Number.POSITIVE_INFINITY)) {
    return invalid(`sum ${data.sum} is not a finite non-negative number`)
  }
  const sketch = new LatencySketch()
  sketch.mergeBuckets(data.offset, data.counts, data.count, data.zeroCount, data.sum)
  return Either.right(sketch)
}

/**
 * `fromData` for data this process produced or already validated (e.g. read back from its own
 * store). Throws `InvalidSketch` on data that fails `fromData`'s checks.
 */
export const unsafeFromData = (data: SketchData): LatencySketch =>
  Either.getOrThrowWith(fromData(data), (error) => error)
