/**
 * The obs ring without sockets: the placement every node computes (`Placement`: core's HashRing over
 * the members, 2^16 partitions, replication 3), fed what a day of a large install sends.
 *
 * 1. Load: 100 nodes, 10,000 agents, a day of trace ids as iii's agents mint them (6 bytes of
 *    milliseconds, then 10 random bytes), SIM_TRACES of them (default 2,000,000) spread over 24 h.
 *    Each node's load is the trace ids it keeps (as any of the 3 owners); target max/mean ≤ 1.10.
 *    RED parts are placed by service and metric points by agent: those loads are shown too.
 * 2. A join: a 101st node. Record copies that move (a key gains an owner) over all copies stored;
 *    target ≤ 1/N + 2% (N = 101); and that nothing moves between old nodes.
 * 3. Fan-out as the cluster grows (3 … 10,000 nodes): a search asks every member, so per search N
 *    requests and N pages merged (the merge timed with the real `Merge.pages`), its latency the
 *    slowest of N answers (per-node answer times modelled as log-normal, median 2 ms, p99 10 ms);
 *    heartbeats (every node pings every other each second); building the owner table; and the
 *    balance 2^16 partitions still give. Where these stop scaling is written in the obs README.
 *
 *   npm run bench:ring-sim
 *   SIM_TRACES=500000 npm run bench:ring-sim
 */
import { randomBytes } from "node:crypto"
import type { TraceSummary } from "@iii/obs/Store"
// Internals are not exported by the package: the built files, as bench:codec reads its checks.
import * as Merge from "../packages/obs/dist/internal/cluster/Merge.js"
import { defaultRingLayout, Placement } from "../packages/obs/dist/internal/cluster/Placement.js"
import { fmt, percentile } from "./obs-support.ts"

const TRACES = Number(process.env.SIM_TRACES ?? 2_000_000)
const NODES = 100
const AGENTS = 10_000
const SERVICES = 2_000
const layout = defaultRingLayout
const nodeNames = (n: number) =>
  Array.from({ length: n }, (_, i) => `iii-obs-${i}.iii-obs.iii-system.svc:4320`)

/** Trace ids as agents mint them over a day: ms since the day began in the first 6 bytes. */
const dayStart = Date.UTC(2026, 0, 1)
const traceIds = (n: number): Array<string> => {
  const random = randomBytes(10 * n)
  return Array.from({ length: n }, (_, i) => {
    const ms = dayStart + Math.floor((i / n) * 86_400_000)
    return ms.toString(16).padStart(12, "0") + random.subarray(10 * i, 10 * i + 10).toString("hex")
  })
}

/** max/mean of the keys each node keeps (as any owner). */
const balance = (placement: Placement, keys: ReadonlyArray<string>) => {
  const load = new Map<string, number>(placement.members.map((m) => [m, 0]))
  for (const k of keys) for (const o of placement.ownersOf(k)) load.set(o, (load.get(o) ?? 0) + 1)
  const values = Array.from(load.values())
  const mean = values.reduce((a, b) => a + b, 0) / values.length
  return { max: Math.max(...values) / mean, min: Math.min(...values) / mean }
}

const timed = <A>(f: () => A): [A, number] => {
  const t = performance.now()
  const a = f()
  return [a, performance.now() - t]
}

console.log(
  `obs ring simulation: ${NODES} nodes, replication ${layout.replication}, 2^${layout.partitionBits} partitions, ` +
    `${layout.vnodes} vnodes and ${layout.probes} probes per node; ${fmt(AGENTS)} agents, ${fmt(TRACES)} trace ids over a day`
)
const ids = traceIds(TRACES)
const [ring, buildMs] = timed(() => new Placement(nodeNames(NODES), layout))
const traces = balance(ring, ids)
const agents = balance(
  ring,
  Array.from({ length: AGENTS }, (_, i) => `agent-${i}`)
)
const services = balance(
  ring,
  Array.from({ length: SERVICES }, (_, i) => `service-${i}`)
)
console.log("load")
console.log(
  `  trace ids (spans, logs by trace)   max/mean ${fmt(traces.max, 3)}, min/mean ${fmt(traces.min, 3)}  (target max/mean ≤ 1.10: ${traces.max <= 1.1 ? "met" : "NOT met"})`
)
console.log(`  agents (metric points)             max/mean ${fmt(agents.max, 3)} over ${fmt(AGENTS)} agents`)
console.log(
  `  services (RED parts)               max/mean ${fmt(services.max, 3)} over ${fmt(SERVICES)} services`
)
console.log(`  owner table built in ${fmt(buildMs)} ms (${fmt(ring.sets.length)} distinct owner sets)`)

const [joined, joinMs] = timed(() => new Placement(nodeNames(NODES + 1), layout))
const newcomer = nodeNames(NODES + 1)[NODES] ?? ""
let moved = 0
let elsewhere = 0
let primaryMoved = 0
for (const id of ids) {
  const before = ring.ownersOf(id)
  const after = joined.ownersOf(id)
  for (const o of after) if (!before.includes(o)) o === newcomer ? moved++ : elsewhere++
  if (before[0] !== after[0]) primaryMoved++
}
const movedShare = moved / (ids.length * layout.replication)
console.log(`join of a ${NODES + 1}st node (owner table rebuilt in ${fmt(joinMs)} ms)`)
console.log(
  `  record copies moved                ${fmt(100 * movedShare, 2)}% of all copies (1/N = ${fmt(100 / (NODES + 1), 2)}%; target ≤ 1/N + 2%: ${movedShare <= 1 / (NODES + 1) + 0.02 ? "met" : "NOT met"})`
)
console.log(`  copies moved between old nodes     ${fmt(elsewhere)} (only the newcomer gains)`)
console.log(`  keys whose preferred owner moved   ${fmt((100 * primaryMoved) / ids.length, 2)}%`)

// Fan-out: a search asks all N nodes and merges N pages of up to 20 traces.
const summary = (i: number, node: number): TraceSummary => ({
  traceId: ids[i % ids.length] ?? "",
  correlationId: "",
  matched: {
    service: "checkout",
    name: "GET /x",
    spanId: `${node}`.padStart(16, "0"),
    startTimeUnixNano: BigInt(1e15 - i) * 1000n
  },
  rootService: "checkout",
  rootName: "GET /x",
  startTimeUnixNano: BigInt(1e15 - i) * 1000n,
  durationNano: 1,
  spanCount: 3,
  errorCount: 0,
  services: ["checkout"]
})
/** Log-normal answer times: median 2 ms, p99 10 ms. */
const sigma = Math.log(10 / 2) / 2.326
const answerMs = () => {
  const u = 1 - Math.random()
  const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random())
  return 2 * Math.exp(sigma * z)
}
console.log("fan-out of a search as the cluster grows (every member asked)")
console.log(
  "  nodes   requests  merge CPU   search p50   search p99   heartbeats/s   owner table   trace load max/mean"
)
for (const n of [3, 10, 30, 100, 300, 1_000, 3_000, 10_000]) {
  const pages = Array.from({ length: n }, (_, node) => ({
    traces: Array.from({ length: 20 }, (_, k) => summary(node * 20 + k, node))
  }))
  const runs = Math.max(3, Math.floor(2_000 / n))
  const [, mergeMs] = timed(() => {
    for (let r = 0; r < runs; r++) Merge.pages(pages, 20)
  })
  const latencies = Array.from({ length: 2_000 }, () =>
    Math.max(...Array.from({ length: n }, answerMs))
  ).sort((a, b) => a - b)
  const [placement, tableMs] =
    n <= layout.replication ? [ring, 0] : timed(() => new Placement(nodeNames(n), layout))
  const sample = ids.slice(0, Math.min(ids.length, 200_000))
  const load = n <= layout.replication ? { max: 1 } : balance(placement, sample)
  console.log(
    `  ${String(n).padStart(5)}   ${String(n).padStart(8)}  ${fmt(((mergeMs / runs) * 1000) | 0).padStart(6)} µs   ${fmt(percentile(latencies, 0.5), 1).padStart(7)} ms   ${fmt(percentile(latencies, 0.99), 1).padStart(7)} ms   ${fmt(n * (n - 1)).padStart(12)}   ${fmt(tableMs).padStart(8)} ms   ${fmt(load.max, 3).padStart(8)}`
  )
}
console.log(
  "  (trace load at each size from the first 200,000 ids: 2^16 partitions give each of N nodes 3 × 65,536 / N of them)"
)
