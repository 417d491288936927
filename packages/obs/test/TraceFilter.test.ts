import { randomBytes } from "node:crypto"
import { describe, expect, it } from "vitest"
import * as TraceFilter from "../src/internal/lmdb/TraceFilter.js"

const ids = (n: number) => Array.from({ length: n }, () => TraceFilter.idHash(randomBytes(16)))

describe("TraceFilter", () => {
  it("holds every id it was built from, and few others (under 0.2% at 20,000 ids)", () => {
    const held = ids(20_000)
    const filter = TraceFilter.decode(TraceFilter.build(held))
    if (filter === undefined) throw new Error("a built filter decodes")
    expect(held.every((hash) => TraceFilter.mayHold(filter, hash))).toBe(true)
    const others = ids(20_000).filter((hash) => TraceFilter.mayHold(filter, hash)).length
    expect(others / 20_000).toBeLessThan(0.002)
  })

  it("builds from the first `count` hashes only (the writer's buffer is larger than its epoch)", () => {
    const hashes = new Uint32Array(ids(10))
    const filter = TraceFilter.decode(TraceFilter.build(hashes, 5))
    if (filter === undefined) throw new Error("a built filter decodes")
    expect(Array.from(hashes.subarray(0, 5), (hash) => TraceFilter.mayHold(filter, hash))).toEqual(
      Array(5).fill(true)
    )
    expect(filter.size).toBe(80) // 16 bits for each of 5 ids, not of 10
  })

  it("refuses bytes that are not a filter: another version, a truncated or padded body, no probes", () => {
    const good = TraceFilter.build(ids(100))
    const changed = (at: number, value: number) => {
      const bytes = Uint8Array.from(good)
      bytes[at] = value
      return bytes
    }
    expect(TraceFilter.decode(good)).toBeDefined()
    for (const bad of [
      new Uint8Array(0),
      good.subarray(0, 7),
      changed(0, 2),
      changed(1, 0),
      good.subarray(0, good.length - 1),
      Uint8Array.from([...good, 0]),
      changed(7, (good[7] ?? 0) ^ 8)
    ])
      expect(TraceFilter.decode(bad)).toBeUndefined()
  })
})
