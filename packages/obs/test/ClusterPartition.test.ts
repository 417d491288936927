/**
 * The ledger test with a real network partition instead of signals: three nodes, each in a network
 * namespace of its own that the test makes (veth pairs on a bridge), and iptables rules in one of
 * them that cut it off from the other two (both ways) while agents write through every node. The cut-off node
 * answers reads `partial` and refuses the writes it cannot get a quorum for; the agents keep those
 * and send them again; after the partition heals every acknowledged span is readable through every
 * node, none twice.
 */
import type { Telemetry } from "@iii/core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  buildCli,
  eventually,
  freePorts,
  get,
  type NodeProcess,
  startCluster,
  type TestCluster,
  tails
} from "./fixtures/Cluster.js"
import { LedgerAgent, type LedgerBatch } from "./fixtures/LedgerAgent.js"
import { makeNetwork, type NetNs, netnsSkipReason } from "./fixtures/NetNs.js"
import { span } from "./fixtures/Spans.js"

const skip = netnsSkipReason()
if (skip !== undefined) console.warn(`obs partition test skipped: ${skip}`)

const SPANS = 60_000
const PER_BATCH = 500
const PER_TRACE = 100
const AGENTS = 3
const addresses = ["10.213.1.1", "10.213.1.2", "10.213.1.3"]

describe.skipIf(skip !== undefined)("obs cluster under a network partition", () => {
  let network: { nodes: Array<NetNs>; remove: () => void }
  let cluster: TestCluster
  const nodes: Array<NodeProcess> = []
  /** Each node as the test reaches it: through a bridge on the host's 127.0.0.1. */
  const urls: Array<string> = []

  beforeAll(async () => {
    buildCli()
    network = makeNetwork(addresses)
    cluster = await startCluster(0, { args: ["--heartbeat-timeout", "3s", "--repair-interval", "2s"] })
    const ports = await freePorts(6)
    const peers = addresses.map((a, i) => `${a}:${ports[i]}`)
    for (const [i, address] of addresses.entries()) {
      const ns = network.nodes[i] as NetNs
      const node = cluster.node(ports[i] ?? 0, peers, [], address, ns.wrap)
      nodes.push(node)
      await ns.expose(address, ports[i] ?? 0, ports[i + 3] ?? 0)
      urls.push(`http://127.0.0.1:${ports[i + 3]}`)
    }
    await Promise.all(nodes.map((n) => n.start()))
  }, 120_000)
  afterAll(async () => {
    await cluster?.stop()
    network?.remove()
  })

  /** Drops every packet between the last node and the first two, both ways, in the last one's namespace. */
  const cut = (on: boolean) => {
    const isolated = network.nodes[2] as NetNs
    for (const other of addresses.slice(0, 2)) {
      isolated.run("iptables", [on ? "-A" : "-D", "INPUT", "-s", other, "-j", "DROP"])
      isolated.run("iptables", [on ? "-A" : "-D", "OUTPUT", "-d", other, "-j", "DROP"])
    }
  }

  it("a cut-off node answers partial and refuses writes; after healing nothing acknowledged is lost", async () => {
    try {
      await partition()
    } catch (e) {
      console.error(tails(nodes, 20))
      throw e
    }
  }, 300_000)

  const partition = async () => {
    const now = BigInt(Date.now()) * 1_000_000n
    const batches: Array<Array<LedgerBatch>> = Array.from({ length: AGENTS }, (_, a) =>
      Array.from({ length: SPANS / PER_BATCH / AGENTS }, (_, i) => ({
        seq: i + 1,
        spans: Array.from({ length: PER_BATCH }, (_, k) =>
          span({
            trace: 5_000_000 + a * 100_000 + i * 10 + Math.floor(k / PER_TRACE),
            startTimeUnixNano: now + BigInt(i * PER_BATCH + k) * 1000n
          })
        )
      }))
    )
    // Agent a sends through node a (the third through the node that is cut off), 300 ms apart.
    const agents = batches.map((b, a) => new LedgerAgent(`partition-${a}`, () => [urls[a] ?? ""], b, 2, 300))
    const acked = () => agents.reduce((n, a) => n + a.acked.size, 0)
    const writing = Promise.all(agents.map((a) => a.run()))
    await eventually("a quarter acknowledged", 120_000, async () => acked() >= (SPANS / PER_BATCH) * 0.25)

    cut(true)
    const isolated = urls[2] ?? ""
    const seen = await eventually("the cut-off node sees the others down", 30_000, async () => {
      const r = await get(`${isolated}/v1/cluster`)
      return r?.body.members.filter((m: { state: string }) => m.state === "down").length === 2
        ? r.body
        : undefined
    })
    expect(seen.members.find((m: { address: string }) => m.address === nodes[2]?.address).state).toBe("up")
    const search = await get(`${isolated}/v1/traces?since=1h&limit=5`)
    expect(search?.body).toMatchObject({ partial: true })
    expect(search?.body.missing.sort()).toEqual([nodes[0]?.address, nodes[1]?.address].sort())
    const refusedBefore = agents[2]?.refusals ?? 0
    const heldBefore = agents[2]?.acked.size ?? 0
    // The majority side keeps acknowledging; the cut-off side refuses.
    const majorityBefore = (agents[0]?.acked.size ?? 0) + (agents[1]?.acked.size ?? 0)
    const majorityTotal = 2 * (SPANS / PER_BATCH / AGENTS)
    await eventually("the majority goes on while the minority refuses", 30_000, async () => {
      const majority = (agents[0]?.acked.size ?? 0) + (agents[1]?.acked.size ?? 0)
      return (
        (majority >= majorityBefore + 2 || majority === majorityTotal) &&
        (agents[2]?.refusals ?? 0) > refusedBefore
      )
    })
    expect(agents[2]?.acked.size).toBe(heldBefore)
    cut(false)

    await writing
    await eventually("every member up again", 60_000, async () => {
      const views = await Promise.all(urls.map((u) => get(`${u}/v1/cluster`)))
      return views.every((v) => v?.body.members.every((m: { state: string }) => m.state === "up"))
    })
    let lost = 0
    let twice = 0
    let readable = 0
    for (const url of urls)
      for (const [a, list] of batches.entries())
        for (const b of list) {
          if (!agents[a]?.acked.has(b.seq)) continue
          for (let t = 0; t < PER_BATCH; t += PER_TRACE) {
            const first = b.spans[t] as Telemetry.Span
            const r = await get(`${url}/v1/traces/${first.traceId}`)
            const ids: Array<string> = (r?.body?.spans ?? []).map((s: Telemetry.Span) => s.spanId)
            twice += ids.length - new Set(ids).size
            const have = new Set(ids)
            for (const s of b.spans.slice(t, t + PER_TRACE)) {
              if (have.has(s.spanId)) readable++
              else lost++
            }
          }
        }
    const acknowledged = acked() * PER_BATCH
    console.info(
      `partition: acknowledged ${acknowledged} spans, readable ${readable / urls.length} through each of ${urls.length} nodes, lost ${lost}, stored twice ${twice}; ` +
        `the cut-off node's agent was refused ${agents[2]?.refusals} batches and sent them again`
    )
    expect(acknowledged).toBe(SPANS)
    expect(lost).toBe(0)
    expect(twice).toBe(0)
  }
})
