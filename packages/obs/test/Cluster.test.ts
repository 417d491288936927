import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Cause, Effect, Exit, Layer, Option } from "effect"
import { Packr, Unpackr } from "msgpackr"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { defaultRingLayout } from "../src/internal/cluster/Placement.js"
import { layoutVersion } from "../src/internal/lmdb/Keys.js"
import * as LmdbStore from "../src/LmdbStore.js"
import * as ObsCluster from "../src/ObsCluster.js"
import { makeClusterConfig, makeConfig } from "../src/ObsNodeConfig.js"
import { buildCli, eventually, freePorts, get, startCluster, type TestCluster } from "./fixtures/Cluster.js"
import { TestAgent } from "./fixtures/Node.js"
import { log, span, traceId } from "./fixtures/Spans.js"

const token = "cluster-secret"
/** Small enough to reach in a test; the default is 1,024. */
const peerCap = 5
const auth = { authorization: `Bearer ${token}` }
/** A node's /metrics text, and one series' value in it (NaN when absent). */
const scrape = (url: string) => fetch(`${url}/metrics`).then((r) => r.text())
const series = (text: string, name: string) =>
  Number(
    text
      .split("\n")
      .find((l) => l.startsWith(`${name} `))
      ?.slice(name.length + 1) ?? Number.NaN
  )
const authed = (url: string) =>
  // biome-ignore lint/suspicious/noExplicitAny: tests poke into JSON answers
  fetch(url, { headers: auth }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }))

describe("obs cluster of 3 processes", () => {
  let cluster: TestCluster
  beforeAll(async () => {
    buildCli()
    cluster = await startCluster(3, {
      env: {
        III_OBS_TOKEN: token,
        III_OBS_MAX_PEER_CONNECTIONS: String(peerCap),
        III_OBS_HELLO_TIMEOUT: "2s"
      }
    })
  }, 120_000)
  afterAll(() => cluster?.stop())

  it("reports its members up, ring and replication in GET /v1/cluster", async () => {
    for (const n of cluster.nodes) {
      const body = await eventually(`${n.address} sees 3 members up`, 20_000, async () => {
        const r = await authed(`${n.url}/v1/cluster`)
        return r.body.stable && r.body.members.every((m: { state: string }) => m.state === "up")
          ? r.body
          : undefined
      })
      expect(body).toMatchObject({ node: n.address, replicationFactor: 3, replicas: 3, writeQuorum: 2 })
      expect(body.members.map((m: { address: string }) => m.address).sort()).toEqual(
        [...cluster.peers].sort()
      )
      expect(body.members[0].ownership).toEqual({ replica: 1, primary: expect.any(Number) })
      expect(body.members[0].replicationLag).toEqual({ hints: 0, hintBytes: 0, oldestHintSeconds: 0 })
    }
    expect((await get(`${cluster.nodes[0]?.url}/v1/cluster`))?.status).toBe(401)
  })

  it("stores what any node is sent where every node reads it, each span once", async () => {
    const now = BigInt(Date.now()) * 1_000_000n
    const written = cluster.nodes.map((n, i) => {
      const spans = [
        span({ trace: 500 + i, startTimeUnixNano: now, correlationId: `order-${i}` }),
        span({ trace: 500 + i, startTimeUnixNano: now + 1000n, service: `svc-${i}` })
      ]
      return { node: n, spans }
    })
    for (const [i, { node, spans }] of written.entries()) {
      const agent = new TestAgent(node.url, auth)
      await agent.hello(`cluster-agent-${i}`)
      agent.send({
        type: "batch",
        seq: 1,
        spans,
        metrics: [],
        logs: [log({ correlationId: `order-${i}`, timeUnixNano: now, body: `log ${i}` })]
      })
      expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
      // Sent again (a reconnect): acknowledged, stored once.
      agent.send({ type: "batch", seq: 1, spans, metrics: [], logs: [] })
      expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
      agent.close()
    }
    for (const reader of cluster.nodes)
      for (const [i, { spans }] of written.entries()) {
        const trace = await authed(`${reader.url}/v1/traces/${traceId(500 + i)}`)
        expect(trace.status, `${reader.address} reads trace ${i}`).toBe(200)
        expect(trace.body.spans.map((s: { spanId: string }) => s.spanId).sort()).toEqual(
          spans.map((s) => s.spanId).sort()
        )
        expect(trace.body.partial).toBeUndefined()
        const correlated = await authed(`${reader.url}/v1/correlate/order-${i}`)
        expect(correlated.body.logs.map((l: { body: string }) => l.body)).toEqual([`log ${i}`])
      }
    const search = await authed(`${cluster.nodes[1]?.url}/v1/traces?since=1h&limit=50`)
    const ids = search.body.traces.map((t: { traceId: string }) => t.traceId)
    expect(ids.filter((id: string) => id === traceId(500))).toHaveLength(1)
    expect(ids).toEqual(expect.arrayContaining([traceId(500), traceId(501), traceId(502)]))
    const services = await authed(`${cluster.nodes[2]?.url}/v1/services`)
    expect(services.body.services.map((s: { service: string }) => s.service)).toEqual(
      expect.arrayContaining(["checkout", "svc-0", "svc-1", "svc-2"])
    )
  })

  it("streams to a tail on any node the spans acknowledged through every node, each once", async () => {
    const [a, b, c] = cluster.nodes
    if (a === undefined || b === undefined || c === undefined) throw new Error("no nodes")
    const received: Array<string> = []
    const tail = new WebSocket(`${b.url.replace("http", "ws")}/v1/tail?service=tailed`, { headers: auth })
    tail.on("message", (data: Buffer) => {
      const message = JSON.parse(data.toString()) as { type: string; spans?: Array<{ spanId: string }> }
      for (const s of message.spans ?? []) received.push(s.spanId)
    })
    await new Promise((r) => tail.once("open", r))
    // The other nodes learn of b's subscriber from b's next pong (heartbeats every second).
    await new Promise((r) => setTimeout(r, 2_500))
    const now = BigInt(Date.now()) * 1_000_000n
    const sent: Array<string> = []
    for (const [i, node] of [a, b, c].entries()) {
      const spans = [span({ trace: 600 + i, service: "tailed", startTimeUnixNano: now })]
      sent.push(...spans.map((x) => x.spanId))
      const agent = new TestAgent(node.url, auth)
      await agent.hello(`tail-agent-${i}`)
      agent.send({ type: "batch", seq: 1, spans, metrics: [], logs: [] })
      expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
      agent.close()
    }
    await eventually("every span tailed", 10_000, async () => received.length >= sent.length)
    await new Promise((r) => setTimeout(r, 500))
    tail.close()
    expect(received.sort()).toEqual(sent.sort())
  })

  it("refuses a peer without the cluster token, and an unknown one with it", async () => {
    const first = cluster.nodes[0]?.address ?? ""
    const noToken = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://${first}/v1/peer`)
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0))
      ws.on("open", () => resolve(101))
      ws.on("error", () => undefined)
    })
    expect(noToken).toBe(401)
    const refused = await new Promise<unknown>((resolve) => {
      const ws = new WebSocket(`ws://${first}/v1/peer`, { headers: auth })
      ws.on("open", () =>
        ws.send(
          new Packr({ useRecords: false }).pack([
            "hello",
            {
              node: "127.0.0.1:1",
              state: "up",
              settled: "",
              tail: 0,
              layoutVersion,
              layout: { replication: 3, vnodes: 128, probes: 8, partitionBits: 16 }
            }
          ])
        )
      )
      ws.on("message", (data: Buffer) => resolve(new Unpackr({ useRecords: false }).unpack(data)))
    })
    expect(refused).toEqual(["refused", "unknown peer 127.0.0.1:1: not a member of this cluster"])
    const metrics = await scrape(cluster.nodes[0]?.url ?? "")
    expect(series(metrics, 'iii_obs_connections_refused_total{endpoint="peer",reason="unauthorized"}')).toBe(
      1
    )
    expect(series(metrics, 'iii_obs_connections_closed_total{endpoint="peer",reason="refused"}')).toBe(1)
  })

  it("takes peers under the client socket rules: a cap (503), the hello deadline, counted as endpoint=peer", async () => {
    const first = cluster.nodes[0]
    if (first === undefined) throw new Error("no nodes")
    const dial = () =>
      new Promise<{ status: number; ws?: WebSocket }>((resolve) => {
        const ws = new WebSocket(`ws://${first.address}/v1/peer`, { headers: auth })
        ws.on("unexpected-response", (_req, res) => resolve({ status: res.statusCode ?? 0 }))
        ws.on("open", () => resolve({ status: 101, ws }))
        ws.on("error", () => undefined)
      })
    // The two other nodes' links (the refused peer of the test before closes at its pace).
    const dialled = await eventually("the other nodes' links only", 10_000, async () =>
      series(await scrape(first.url), "iii_obs_peer_connections") === 2 ? 2 : undefined
    )
    const sockets: Array<WebSocket> = []
    for (let i = dialled; i < peerCap; i++) {
      const { status, ws } = await dial()
      expect(status).toBe(101)
      if (ws !== undefined) sockets.push(ws)
    }
    const closed = sockets.map(
      (ws) => new Promise<number>((resolve) => ws.on("close", (code: number) => resolve(code)))
    )
    expect((await dial()).status).toBe(503)
    // None of them says hello: each is closed at the deadline (2 s here) with a policy violation.
    expect(await Promise.all(closed)).toEqual(sockets.map(() => 1008))
    const metrics = await scrape(first.url)
    expect(series(metrics, 'iii_obs_connections_refused_total{endpoint="peer",reason="cap"}')).toBe(1)
    expect(series(metrics, 'iii_obs_connections_closed_total{endpoint="peer",reason="hello_timeout"}')).toBe(
      sockets.length
    )
    expect(series(metrics, 'iii_obs_connections_closed_total{endpoint="peer",reason="ping_timeout"}')).toBe(0)
    // The members' own links stand (one re-dialled meanwhile is counted twice until the old one closes).
    await eventually("the other nodes' links only, again", 10_000, async () =>
      series(await scrape(first.url), "iii_obs_peer_connections") === 2 ? true : undefined
    )
    const view = await authed(`${first.url}/v1/cluster`)
    expect(view.body.members.every((m: { state: string }) => m.state === "up")).toBe(true)
  })

  it("answers reads partial and refuses writes without a quorum when cut off from the others, then takes them", async () => {
    const [alone, a, b] = cluster.nodes
    if (alone === undefined || a === undefined || b === undefined) throw new Error("no nodes")
    const agent = new TestAgent(alone.url, auth)
    await agent.hello("minority-agent")
    await a.signal("SIGSTOP")
    await b.signal("SIGSTOP")
    try {
      const view = await eventually("the others are down", 20_000, async () => {
        const r = await authed(`${alone.url}/v1/cluster`)
        return r.body.members.filter((m: { state: string }) => m.state === "down").length === 2
          ? r.body
          : undefined
      })
      // Down members keep their share of the ring (they are members still), and the factor stays.
      expect(view).toMatchObject({ replicationFactor: 3, replicas: 3, writeQuorum: 2 })
      for (const m of view.members)
        expect(m).toMatchObject({
          state: m.address === alone.address ? "up" : "down",
          ownership: { replica: 1, primary: expect.any(Number) },
          replicationLag: { hints: expect.any(Number), hintBytes: expect.any(Number) }
        })
      const now = BigInt(Date.now()) * 1_000_000n
      const spans = [span({ trace: 700, startTimeUnixNano: now })]
      agent.send({ type: "batch", seq: 1, spans, metrics: [], logs: [] })
      expect(await agent.ack(1)).toMatchObject({ type: "error", code: "overloaded", seq: 1, fatal: false })
      const search = await authed(`${alone.url}/v1/traces?since=1h&limit=5`)
      expect(search.status).toBe(200)
      expect(search.body.partial).toBe(true)
      expect(search.body.missing.sort()).toEqual([a.address, b.address].sort())
      const trace = await authed(`${alone.url}/v1/traces/${traceId(500)}`)
      expect(trace.body).toMatchObject({ partial: true })
      const metric = await fetch(
        `${alone.url}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/iii_request_rate?labelSelector=service=checkout`
      )
      expect(metric.headers.get("x-iii-partial")).toBe("true")
      // Back together: the agent's resend is stored.
      await a.signal("SIGCONT")
      await b.signal("SIGCONT")
      await eventually("the others are up again", 20_000, async () => {
        const r = await authed(`${alone.url}/v1/cluster`)
        return r.body.members.every((m: { state: string }) => m.state === "up")
      })
      agent.frames.length = 0
      agent.send({ type: "batch", seq: 1, spans, metrics: [], logs: [] })
      expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
      const stored = await authed(`${b.url}/v1/traces/${traceId(700)}`)
      expect(stored.body.spans).toHaveLength(1)
      expect(stored.body.partial).toBeUndefined()
    } finally {
      await a.signal("SIGCONT")
      await b.signal("SIGCONT")
      agent.close()
    }
  })

  it("shows a node that leaves cleanly as leaving, to itself and to the others, until it has left", async () => {
    const [stays, , leaver] = cluster.nodes
    if (stays === undefined || leaver === undefined) throw new Error("no nodes")
    await eventually("every member up and settled", 30_000, async () => {
      const r = await authed(`${stays.url}/v1/cluster`)
      return r.body.stable && r.body.members.every((m: { state: string }) => m.state === "up")
    })
    const left = await fetch(`${leaver.url}/v1/cluster/leave`, { method: "POST", headers: auth })
    expect(left.status).toBe(202)
    expect(await left.json()).toEqual({ node: leaver.address, state: "leaving" })
    // Its peers must settle without it before it has left: a heartbeat or more away.
    const own = await authed(`${leaver.url}/v1/cluster`)
    expect(own.body.state).toBe("leaving")
    const stateOf = (body: { members: Array<{ address: string; state: string }> }) =>
      body.members.find((m) => m.address === leaver.address)?.state
    expect(stateOf(own.body)).toBe("leaving")
    const seen: Array<string | undefined> = []
    await eventually("the others see it leave, then left", 60_000, async () => {
      const r = await authed(`${stays.url}/v1/cluster`)
      const state = stateOf(r.body)
      if (seen[seen.length - 1] !== state) seen.push(state)
      return state === undefined
    })
    // "up" first only if the first look came before its next heartbeat.
    expect(seen.filter((state) => state !== "up")).toEqual(["leaving", undefined])
    expect((await authed(`${leaver.url}/v1/cluster`)).body.state).toBe("left")
  })
})

describe("obs cluster start-up", () => {
  it("refuses a data directory written with another ring layout, saying so, and leaves it as it was", async () => {
    const dir = mkdtempSync(join(tmpdir(), "iii-obs-layout-"))
    try {
      const other = { ...defaultRingLayout, vnodes: 64 }
      await Effect.runPromise(
        Effect.scoped(
          Effect.flatMap(LmdbStore.make({ path: dir }), (s) => s.replica.putSetting("cluster.ring", other))
        )
      )
      const cfg = makeConfig(dir, {
        host: "127.0.0.1",
        port: 0,
        cluster: Option.some(makeClusterConfig("127.0.0.1:1", { _tag: "Static", peers: [] }))
      })
      const exit = await Effect.runPromiseExit(Effect.scoped(Layer.build(ObsCluster.layer(cfg))))
      expect(Exit.isFailure(exit)).toBe(true)
      expect(String(Exit.isFailure(exit) && Cause.squash(exit.cause))).toMatch(
        /was written by a cluster with replication 3, 64 vnodes.*configured with replication 3, 128 vnodes.*Refusing to start/s
      )
      const kept = await Effect.runPromise(
        Effect.scoped(
          Effect.flatMap(LmdbStore.make({ path: dir }), (s) => s.replica.getSetting("cluster.ring"))
        )
      )
      expect(kept).toEqual(other)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("listens at once, before any peer answers: /healthz, and /v1/cluster with this node joining", async () => {
    buildCli()
    const cluster = await startCluster(0)
    try {
      const ports = await freePorts(3)
      const peers = ports.map((p) => `127.0.0.1:${p}`)
      // Nothing listens on the other two; a heartbeat timeout far longer than the test may take.
      const node = cluster.node(ports[0] ?? 0, peers, ["--heartbeat-timeout", "10m"])
      const started = Date.now()
      await node.start()
      expect(Date.now() - started).toBeLessThan(60_000)
      expect((await get(`${node.url}/healthz`))?.status).toBe(200)
      const view = await get(`${node.url}/v1/cluster`)
      expect(view?.body).toMatchObject({ node: node.address, state: "joining", replicationFactor: 3 })
      const states = Object.fromEntries(
        view?.body.members.map((m: { address: string; state: string }) => [m.address, m.state])
      )
      expect(states).toEqual({
        [peers[0] ?? ""]: "joining",
        [peers[1] ?? ""]: "down",
        [peers[2] ?? ""]: "down"
      })
    } finally {
      await cluster.stop()
    }
  }, 120_000)

  it("refuses a data directory written with another replication factor, saying so", async () => {
    buildCli()
    // A one-node cluster (default replication 3), then the same node and data with --replication 2.
    const cluster = await startCluster(1)
    try {
      const [first] = cluster.nodes
      if (first === undefined) throw new Error("no node")
      await first.signal("SIGTERM")
      const other = cluster.node(Number(first.address.split(":")[1]), [first.address], ["--replication", "2"])
      await expect(other.start()).rejects.toThrow(
        /was written by a cluster with replication 3.*configured with replication 2.*Refusing to start/s
      )
      expect(other.child.exitCode).not.toBe(0)
    } finally {
      await cluster.stop()
    }
    // Two process starts: ~20 s each on a loaded 2-core machine.
  }, 90_000)
})
