/**
 * Jepsen's set check against a real 3-node cluster: 200,000 spans written through random nodes while
 * one node is SIGKILLed and restarted twice and another is paused past the heartbeat timeout. Every
 * span whose batch was acknowledged must be readable afterwards through every node, none twice.
 */
import type { Telemetry } from "@iii/core"
import { afterAll, beforeAll, expect, it } from "vitest"
import { buildCli, eventually, get, startCluster, type TestCluster } from "./fixtures/Cluster.js"
import { LedgerAgent, type LedgerBatch } from "./fixtures/LedgerAgent.js"
import { span, traceId } from "./fixtures/Spans.js"

const SPANS = 200_000
const PER_BATCH = 500
const PER_TRACE = 100
const AGENTS = 4
const BATCHES_PER_AGENT = SPANS / PER_BATCH / AGENTS

let cluster: TestCluster
beforeAll(async () => {
  buildCli()
  cluster = await startCluster(3, { args: ["--heartbeat-timeout", "3s", "--repair-interval", "2s"] })
}, 120_000)
afterAll(() => cluster?.stop())

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

it("loses no acknowledged span through kills, restarts and a pause, and stores none twice", async () => {
  const now = BigInt(Date.now()) * 1_000_000n
  // Trace t of batch s of agent a: 5 traces of 100 spans per batch, every trace id distinct.
  const traceOf = (a: number, s: number, t: number) => 1_000_000 + a * 100_000 + s * 10 + t
  const batches: Array<Array<LedgerBatch>> = Array.from({ length: AGENTS }, (_, a) =>
    Array.from({ length: BATCHES_PER_AGENT }, (_, i) => ({
      seq: i + 1,
      spans: Array.from({ length: PER_BATCH }, (_, k) =>
        span({ trace: traceOf(a, i + 1, Math.floor(k / PER_TRACE)), startTimeUnixNano: now + BigInt(k) })
      )
    }))
  )
  const urls = () => cluster.nodes.map((n) => n.url)
  const agents = batches.map((b, a) => new LedgerAgent(`ledger-${a}`, urls, b))
  const acked = () => agents.reduce((n, a) => n + a.acked.size, 0) * PER_BATCH
  const startedAt = Date.now()
  const writing = Promise.all(agents.map((a) => a.run()))
  const killed = cluster.nodes[0]
  const paused = cluster.nodes[1]
  if (killed === undefined || paused === undefined) throw new Error("no nodes")
  const faults = (async () => {
    await eventually("15% acknowledged", 120_000, async () => acked() >= SPANS * 0.15)
    await killed.signal("SIGKILL")
    await sleep(1_000)
    await killed.start()
    await eventually("35% acknowledged", 120_000, async () => acked() >= SPANS * 0.35)
    await paused.signal("SIGSTOP")
    await sleep(4_500)
    await paused.signal("SIGCONT")
    await eventually("60% acknowledged", 120_000, async () => acked() >= SPANS * 0.6)
    await killed.signal("SIGKILL")
    await sleep(1_000)
    await killed.start()
  })()
  await Promise.all([writing, faults])
  const acknowledged = acked()
  console.info(`ledger: written in ${Date.now() - startedAt} ms`)
  const settleAt = Date.now()
  // Handoff done: no node keeps hints for another, and every member is up.
  await eventually("hints handed off, every member up", 120_000, async () => {
    const views = await Promise.all(cluster.nodes.map((n) => get(`${n.url}/v1/cluster`)))
    return views.every(
      (v) =>
        v?.body.stable &&
        v.body.members.every(
          (m: { state: string; replicationLag: { hints: number } }) =>
            m.state === "up" && m.replicationLag.hints === 0
        )
    )
  })

  console.info(`ledger: handoff and settling took ${Date.now() - settleAt} ms`)
  let readable = 0
  let twice = 0
  const expected = new Map<string, Set<string>>()
  for (const [a, list] of batches.entries())
    for (const b of list)
      if (agents[a]?.acked.has(b.seq))
        for (const s of b.spans) {
          const ids = expected.get(s.traceId) ?? new Set<string>()
          ids.add(s.spanId)
          expected.set(s.traceId, ids)
        }
  const missing: Array<string> = []
  const reads = cluster.nodes.flatMap((node) =>
    Array.from(expected, ([trace, ids]) => ({ node, trace, ids }))
  )
  const readAt = Date.now()
  // Eight requests at a time: every read of every trace through every node.
  await Promise.all(
    Array.from({ length: 8 }, async (_, lane) => {
      for (let i = lane; i < reads.length; i += 8) {
        const { node, trace, ids } = reads[i] as (typeof reads)[number]
        const r = await get(`${node.url}/v1/traces/${trace}`)
        const spans: ReadonlyArray<Telemetry.Span> = r?.body?.spans ?? []
        const got = new Set<string>(spans.map((s) => s.spanId))
        twice += spans.length - got.size
        for (const id of ids) if (got.has(id)) readable++
        if (got.size < ids.size) missing.push(`${node.address} ${trace}: ${got.size} of ${ids.size}`)
      }
    })
  )
  console.info(`ledger: ${reads.length} trace reads in ${Date.now() - readAt} ms`)
  const lost = acknowledged * cluster.nodes.length - readable
  for (const node of cluster.nodes) {
    const r = await get(`${node.url}/v1/cluster`)
    console.info(
      `ledger: ${node.address} repair ${JSON.stringify(r?.body.repair)} moved ${JSON.stringify(r?.body.moved)}`
    )
  }
  console.info(
    `ledger: acknowledged ${acknowledged} spans, readable ${readable / cluster.nodes.length} through each of ${cluster.nodes.length} nodes (${readable} reads), lost ${lost}, stored twice ${twice}; ` +
      `agents reconnected ${agents.reduce((n, a) => n + a.reconnects, 0)} times, were refused ${agents.reduce((n, a) => n + a.refusals, 0)} batches for want of a quorum`
  )
  expect(acknowledged).toBe(SPANS)
  expect(missing.slice(0, 5)).toEqual([])
  expect(lost).toBe(0)
  expect(twice).toBe(0)
  expect(expected.size).toBe(SPANS / PER_TRACE)
  expect(traceId(traceOf(0, 1, 0))).toHaveLength(32)
}, 300_000)
