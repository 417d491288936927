/**
 * Hash ring and latency sketch on their hot paths: lookups/s, balance, adds/s, merge and quantile cost.
 *
 *   npm run bench:core-runtime        (builds packages/core, then runs this with Node 24)
 *
 * Keys are random 32-hex-character trace ids from a fixed seed. Each figure is the best of several
 * rounds, so background load on a shared machine distorts it less.
 */
import * as HashRing from "@iii/core/HashRing"
import * as LatencySketch from "@iii/core/LatencySketch"
import { prng } from "../packages/core/test/fixtures/prng.ts"

const ROUNDS = 7

const rand = prng(7).next
const hex = (bytes: number) => {
  let s = ""
  for (let i = 0; i < bytes; i++)
    s += Math.floor(rand() * 256)
      .toString(16)
      .padStart(2, "0")
  return s
}

/** Best-of-ROUNDS nanoseconds per operation of `run`, which performs `operations` operations. */
const nsPerOp = (operations: number, run: () => void): number => {
  let best = Number.POSITIVE_INFINITY
  for (let round = 0; round < ROUNDS; round++) {
    const start = process.hrtime.bigint()
    run()
    best = Math.min(best, Number(process.hrtime.bigint() - start))
  }
  return best / operations
}

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits })

// ---------------------------------------------------------------------------------------------------
// hash ring

const keys = Array.from({ length: 100_000 }, () => hex(16))
const nodes = ["obs-0", "obs-1", "obs-2", "obs-3", "obs-4"]
let sink = 0

console.log("hash ring: 5 nodes × 128 vnodes, 100,000 trace-id keys")
for (const probes of [1, 8]) {
  for (const replication of [1, 3]) {
    const ring = HashRing.make(nodes, { probes, replication })
    const ns = nsPerOp(keys.length, () => {
      for (const key of keys) sink += HashRing.owners(ring, key).length
    })
    console.log(
      `  owners  probes=${probes} replication=${replication}: ${fmt(ns)} ns/lookup, ${fmt(1e9 / ns)} lookups/s`
    )
  }
}

for (const probes of [1, 8]) {
  let worst = 0
  for (let trial = 0; trial < 20; trial++) {
    const ring = HashRing.make(
      Array.from({ length: 5 }, () => `obs-${hex(4)}`),
      { probes }
    )
    const counts = new Map<string, number>()
    for (const key of keys) {
      const owner = HashRing.owner(ring, key) ?? ""
      counts.set(owner, (counts.get(owner) ?? 0) + 1)
    }
    for (const count of counts.values()) worst = Math.max(worst, Math.abs(count / (keys.length / 5) - 1))
  }
  console.log(
    `  balance probes=${probes}: worst node off its fair share by ${fmt(worst * 100, 1)}% (20 memberships)`
  )
}

const buildNs = nsPerOp(1, () => {
  sink += HashRing.add(HashRing.make(nodes), "obs-5").positions.length
})
console.log(`  make(5 nodes) + add: ${fmt(buildNs / 1000, 1)} µs`)

// ---------------------------------------------------------------------------------------------------
// latency sketch

const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
const latencies = Float64Array.from({ length: 1_000_000 }, () => Math.exp(Math.log(20) + 1.2 * normal()))

console.log("latency sketch: 1,000,000 lognormal latencies (median 20 ms)")
const addNs = nsPerOp(latencies.length, () => {
  const sketch = LatencySketch.make()
  for (let i = 0; i < latencies.length; i++) sketch.add(latencies[i] ?? 0)
  sink += sketch.count
})
console.log(`  add: ${fmt(addNs, 1)} ns/value, ${fmt(1e9 / addNs)} values/s`)

const full = LatencySketch.fromValues(latencies)
const data = full.toData()
console.log(`  toData: ${data.counts.length} buckets (${fmt(JSON.stringify(data).length)} bytes as JSON)`)
const mergeNs = nsPerOp(1000, () => {
  const sketch = LatencySketch.make()
  for (let i = 0; i < 1000; i++) sketch.merge(full)
  sink += sketch.count
})
console.log(`  merge: ${fmt(mergeNs / 1000, 2)} µs/sketch`)
const quantileNs = nsPerOp(3000, () => {
  for (let i = 0; i < 1000; i++) sink += full.quantile(0.5) + full.quantile(0.9) + full.quantile(0.99)
})
console.log(`  quantile: ${fmt(quantileNs / 1000, 2)} µs`)
const roundTripNs = nsPerOp(1000, () => {
  for (let i = 0; i < 1000; i++) sink += LatencySketch.unsafeFromData(full.toData()).count
})
console.log(`  toData + fromData: ${fmt(roundTripNs / 1000, 2)} µs`)

if (sink === 42) console.log("") // keeps the work observable to the optimiser
