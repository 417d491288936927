import { Either, pipe, Schema } from "effect"
import { describe, expect, it } from "vitest"
import * as LatencySketch from "../src/LatencySketch.js"
import { SketchData } from "../src/Telemetry.js"
import { prng } from "./fixtures/prng.js"

const count = 100_000
const quantiles = [0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1]

/** The exact value the sketch's quantile approximates: rank ⌊q·(n − 1)⌋ of the sorted values. */
const exactQuantile = (sorted: ReadonlyArray<number>, q: number) =>
  sorted[Math.floor(q * (sorted.length - 1))] ?? Number.NaN

const relativeError = (estimate: number, exact: number) =>
  exact === 0 ? Math.abs(estimate) : Math.abs(estimate - exact) / exact

const random = prng(2024)
const distributions: Record<string, () => number> = {
  "uniform 0–1000 ms": () => random.next() * 1000,
  "lognormal (median 50 ms, σ 1)": () => Math.exp(Math.log(50) + random.normal()),
  "bimodal (90% ~5 ms cache hits, 10% ~300 ms misses)": () =>
    random.next() < 0.9 ? Math.abs(5 + random.normal()) : Math.abs(300 + 30 * random.normal()),
  "sub-microsecond to seconds (log-uniform 10^-4–10^4 ms)": () => 10 ** (-4 + 8 * random.next())
}

describe("LatencySketch", () => {
  for (const [name, draw] of Object.entries(distributions)) {
    it(`is within 1% of the exact quantiles: ${name}`, () => {
      const values = Array.from({ length: count }, draw)
      const sketch = LatencySketch.fromValues(values)
      const sorted = [...values].sort((a, b) => a - b)
      for (const q of quantiles) {
        const exact = exactQuantile(sorted, q)
        const error = relativeError(sketch.quantile(q), exact)
        expect(error, `q=${q}: ${sketch.quantile(q)} vs exact ${exact}`).toBeLessThanOrEqual(
          LatencySketch.relativeAccuracy
        )
      }
      expect(sketch.count).toBe(count)
      expect(sketch.sum).toBeCloseTo(
        values.reduce((a, b) => a + b, 0),
        3
      )
    })
  }

  it("handles 0 and sub-microsecond values; values below 1 ns count as 0", () => {
    const sketch = LatencySketch.fromValues([0, 0, 0.0005, 0.0005, 0.00002, 1e-7])
    expect(sketch.count).toBe(6)
    expect(sketch.toData().zeroCount).toBe(3)
    expect(sketch.quantile(0)).toBe(0)
    expect(relativeError(sketch.quantile(1), 0.0005)).toBeLessThanOrEqual(0.01)
    expect(relativeError(sketch.quantile(0.6), 0.00002)).toBeLessThanOrEqual(0.01)
  })

  it("rejects negative, NaN and infinite values without recording them", () => {
    const sketch = LatencySketch.make()
    expect(sketch.add(-1)).toBe(false)
    expect(sketch.add(Number.NaN)).toBe(false)
    expect(sketch.add(Number.POSITIVE_INFINITY)).toBe(false)
    expect(sketch.add(12)).toBe(true)
    expect(sketch.count).toBe(1)
    expect(sketch.sum).toBe(12)
  })

  it("counts values beyond the largest bucket in it, keeping the exact sum", () => {
    const sketch = LatencySketch.fromValues([1, 1e12])
    expect(sketch.count).toBe(2)
    expect(sketch.sum).toBe(1e12 + 1)
    expect(relativeError(sketch.quantile(1), LatencySketch.maxIndexedValue)).toBeLessThanOrEqual(0.01)
  })

  it("is NaN for an empty sketch or a quantile outside [0, 1]", () => {
    expect(LatencySketch.make().quantile(0.5)).toBeNaN()
    const sketch = LatencySketch.fromValues([1, 2, 3])
    expect(sketch.quantile(-0.1)).toBeNaN()
    expect(sketch.quantile(1.5)).toBeNaN()
    expect(sketch.quantile(Number.NaN)).toBeNaN()
  })

  it("stays accurate when values arrive far below and above the current bucket range", () => {
    const values = [1000, 0.001, 1e6, 5, 0.00001, 3e8]
    const sketch = LatencySketch.fromValues(values)
    const sorted = [...values].sort((a, b) => a - b)
    for (const q of [0, 0.2, 0.4, 0.6, 0.8, 1]) {
      expect(relativeError(sketch.quantile(q), exactQuantile(sorted, q))).toBeLessThanOrEqual(0.01)
    }
  })

  it("merges exactly: merging sketches of parts equals sketching the whole", () => {
    const values = Array.from(
      { length: count },
      distributions["lognormal (median 50 ms, σ 1)"] ?? random.next
    )
    const whole = LatencySketch.fromValues(values)
    const merged = LatencySketch.make()
      .merge(LatencySketch.fromValues(values.slice(0, 10)))
      .merge(LatencySketch.fromValues(values.slice(10, 50_000)))
      .merge(LatencySketch.make())
      .merge(LatencySketch.fromValues(values.slice(50_000)))
    const { sum: mergedSum, ...mergedBuckets } = merged.toData()
    const { sum: wholeSum, ...wholeBuckets } = whole.toData()
    expect(mergedBuckets).toEqual(wholeBuckets)
    expect(mergedSum).toBeCloseTo(wholeSum, 3)
    for (const q of quantiles) expect(merged.quantile(q)).toBe(whole.quantile(q))
  })

  it("merges a sketch into itself by doubling it", () => {
    const sketch = LatencySketch.fromValues([1, 2, 3])
    sketch.merge(sketch)
    expect(sketch.count).toBe(6)
    expect(sketch.toData().counts.reduce((a, b) => a + b, 0)).toBe(6)
  })

  it("round-trips through SketchData (schema-valid, trimmed) without changing any answer", () => {
    const values = Array.from(
      { length: 10_000 },
      distributions["bimodal (90% ~5 ms cache hits, 10% ~300 ms misses)"] ?? random.next
    )
    values.push(0, 0)
    const sketch = LatencySketch.fromValues(values)
    const data = sketch.toData()
    expect(Schema.decodeUnknownEither(SketchData)(data)._tag).toBe("Right")
    expect(data.counts[0]).toBeGreaterThan(0)
    expect(data.counts[data.counts.length - 1]).toBeGreaterThan(0)
    const restored = Either.getOrThrow(LatencySketch.fromData(data))
    expect(restored.toData()).toEqual(data)
    for (const q of quantiles) expect(restored.quantile(q)).toBe(sketch.quantile(q))
    expect(LatencySketch.make().toData()).toEqual({ count: 0, sum: 0, zeroCount: 0, offset: 0, counts: [] })
  })

  it("refuses sketch data no sketch could have produced, saying why", () => {
    const good = LatencySketch.fromValues([1, 2, 3]).toData()
    const reasonOf = (data: SketchData) =>
      Either.match(LatencySketch.fromData(data), { onLeft: (e) => e.message, onRight: () => "accepted" })
    expect(reasonOf({ ...good, count: 4 })).toMatch(
      /count 4 is not zeroCount \(0\) plus the bucket counts \(3\)/
    )
    expect(reasonOf({ ...good, offset: 1e9 })).toMatch(/outside/)
    expect(reasonOf({ ...good, counts: [1, -1, 3], count: 3 })).toMatch(/bucket count -1/)
    expect(reasonOf({ ...good, sum: Number.NaN })).toMatch(/sum NaN/)
    expect(reasonOf(good)).toBe("accepted")
  })

  it("offers every operation as a module function too", () => {
    const a = LatencySketch.make()
    expect(LatencySketch.add(a, 10)).toBe(true)
    expect(pipe(a, LatencySketch.add(-1))).toBe(false)
    const b = LatencySketch.fromValues([20, 30])
    const merged = pipe(a, LatencySketch.merge(b))
    expect(merged).toBe(a)
    expect(merged.count).toBe(3)
    expect(relativeError(LatencySketch.quantile(merged, 0.5), 20)).toBeLessThanOrEqual(0.01)
    expect(LatencySketch.unsafeFromData(LatencySketch.toData(merged)).toData()).toEqual(merged.toData())
    expect(() => LatencySketch.unsafeFromData({ ...merged.toData(), count: 1 })).toThrow(
      /invalid latency sketch/
    )
  })
})
