/**
 * Properties of the latency sketch's merge (fast-check, through effect): merging sketches is the
 * sketch of all their values, in any order and grouping, through the wire form too, and every
 * quantile of a merge stays within the sketch's relative accuracy of the exact one.
 */
import { Either, FastCheck as fc } from "effect"
import { describe, expect, it } from "vitest"
import * as LatencySketch from "../src/LatencySketch.js"

/** Latencies in milliseconds across the indexed range, with zeros and values past both ends. */
const latency = fc.oneof(
  { weight: 8, arbitrary: fc.double({ min: 1e-6, max: 1e10, noNaN: true }) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1e-9, 5e-7, 1e11, 1e13) },
  { weight: 4, arbitrary: fc.double({ min: 0.01, max: 10_000, noNaN: true }) }
)
const values = fc.array(latency, { maxLength: 200 })

const sketchOf = (xs: ReadonlyArray<number>) => LatencySketch.fromValues(xs)
/** The data with the sum left out: float addition is not associative, bucket counts are. */
const buckets = (s: LatencySketch.LatencySketch) => {
  const { sum: _, ...rest } = s.toData()
  return rest
}
const closeTo = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b))

describe("LatencySketch merge properties", () => {
  it("merging two sketches is the sketch of both sets of values", () => {
    fc.assert(
      fc.property(values, values, (a, b) => {
        const merged = LatencySketch.merge(sketchOf(a), sketchOf(b))
        const whole = sketchOf([...a, ...b])
        expect(buckets(merged)).toEqual(buckets(whole))
        expect(closeTo(merged.sum, whole.sum)).toBe(true)
      }),
      { numRuns: 300 }
    )
  })

  it("is commutative and associative, and survives the wire form (toData / fromData)", () => {
    fc.assert(
      fc.property(values, values, values, (a, b, c) => {
        const ab = LatencySketch.merge(sketchOf(a), sketchOf(b))
        const ba = LatencySketch.merge(sketchOf(b), sketchOf(a))
        expect(buckets(ab)).toEqual(buckets(ba))
        const left = LatencySketch.merge(LatencySketch.merge(sketchOf(a), sketchOf(b)), sketchOf(c))
        const right = LatencySketch.merge(sketchOf(a), LatencySketch.merge(sketchOf(b), sketchOf(c)))
        expect(buckets(left)).toEqual(buckets(right))
        const viaWire = Either.getOrThrow(LatencySketch.fromData(left.toData()))
        expect(viaWire.toData()).toEqual(left.toData())
      }),
      { numRuns: 300 }
    )
  })

  it("every quantile of a merge is within 1% of the exact quantile", () => {
    const indexed = fc.array(fc.double({ min: 1e-6, max: 1e10, noNaN: true }), {
      minLength: 1,
      maxLength: 200
    })
    fc.assert(
      fc.property(indexed, indexed, fc.double({ min: 0, max: 1, noNaN: true }), (a, b, q) => {
        const merged = LatencySketch.merge(sketchOf(a), sketchOf(b))
        const sorted = [...a, ...b].sort((x, y) => x - y)
        const exact = sorted[Math.floor(q * (sorted.length - 1))] ?? Number.NaN
        const estimate = merged.quantile(q)
        expect(Math.abs(estimate - exact)).toBeLessThanOrEqual(
          exact * LatencySketch.relativeAccuracy * (1 + 1e-12)
        )
      }),
      { numRuns: 500 }
    )
  })
})
