/**
 * Anti-entropy on real processes: a node that lost its data directory comes back empty and copies
 * back, from the digests per minute, exactly what it owns, so that every span is again on exactly
 * `replication` nodes.
 */
import { rmSync } from "node:fs"
import { afterAll, beforeAll, expect, it } from "vitest"
import { buildCli, eventually, get, metric, startCluster, type TestCluster } from "./fixtures/Cluster.js"
import { LedgerAgent } from "./fixtures/LedgerAgent.js"
import { span, traceId } from "./fixtures/Spans.js"

const SPANS = 20_000
const PER_BATCH = 500

let cluster: TestCluster
beforeAll(async () => {
  buildCli()
  cluster = await startCluster(3, { args: ["--replication", "2", "--repair-interval", "1s"] })
}, 120_000)
afterAll(() => cluster?.stop())

const stored = async () => {
  const counts = await Promise.all(cluster.nodes.map((n) => metric(n.url, "iii_obs_store_spans")))
  return counts.map((c) => c ?? -1)
}

it("a node back with an empty disk copies back what it owns: every span on exactly RF nodes", async () => {
  // Ten minutes old, so the minutes are settled and compared at once.
  const start = (BigInt(Date.now()) - 600_000n) * 1_000_000n
  const batches = Array.from({ length: SPANS / PER_BATCH }, (_, i) => ({
    seq: i + 1,
    spans: Array.from({ length: PER_BATCH }, (_, k) =>
      span({
        trace: 800_000 + i * 10 + Math.floor(k / 50),
        startTimeUnixNano: start + BigInt(i * PER_BATCH + k) * 1000n
      })
    )
  }))
  const first = cluster.nodes[0]
  const wiped = cluster.nodes[2]
  if (first === undefined || wiped === undefined) throw new Error("no nodes")
  const t0 = Date.now()
  await new LedgerAgent("repair-agent", () => [first.url], batches).run()
  console.info(`written in ${Date.now() - t0} ms`)
  await eventually("every span on 2 nodes", 30_000, async () => {
    const counts = await stored()
    return counts.reduce((a, b) => a + b, 0) === 2 * SPANS ? counts : undefined
  })
  const before = await stored()
  console.info(`replicated in ${Date.now() - t0} ms: ${before}`)

  await wiped.signal("SIGKILL")
  rmSync(wiped.dataDir, { recursive: true, force: true })
  await wiped.start()
  const copied = await eventually("the wiped node has its share back", 90_000, async () => {
    const counts = await stored()
    return counts.reduce((a, b) => a + b, 0) === 2 * SPANS && counts[2] === before[2] ? counts : undefined
  })
  console.info(`copied back in ${Date.now() - t0} ms`)
  expect(copied).toEqual(before)
  // Copied by repair (a write the node had taken but whose ack its coordinator missed may also come
  // back as a hint).
  expect(await metric(wiped.url, "iii_obs_repair_records_copied_total")).toBeGreaterThan((before[2] ?? 0) / 2)
  const cluster2 = await get(`${wiped.url}/v1/cluster`)
  expect(cluster2?.body.repair.minutesMismatched).toBeGreaterThan(0)
  // And the digests agree again: passes stop finding minutes to reconcile.
  let last = -1
  await eventually("no more minutes to reconcile", 60_000, async () => {
    const now = (await get(`${wiped.url}/v1/cluster`))?.body.repair.minutesMismatched
    const settled = now === last
    last = now
    if (!settled) await new Promise((r) => setTimeout(r, 3_000))
    return settled
  })
  const trace = await get(`${wiped.url}/v1/traces/${traceId(800_000)}`)
  expect(trace?.body.spans).toHaveLength(50)
}, 180_000)
