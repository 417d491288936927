/**
 * What every WebSocket on the node's port obeys: the token on the upgrade (401 before any WebSocket
 * exists), a hello deadline on ingest, ping/pong keep-alive, a connection cap per endpoint, and a
 * tail subscriber that stopped reading is closed; counted in /metrics.
 */
import { WireProtocol } from "@iii/core"
import { Duration, Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import * as ObsNodeConfig from "../src/ObsNodeConfig.js"
import {
  getJson,
  pausedTailSubscriber,
  type RunningNode,
  sendBulky,
  startNode,
  TestAgent,
  upgradeStatus
} from "./fixtures/Node.js"
import { span } from "./fixtures/Spans.js"

const wsUrl = (node: RunningNode, path: string) => `${node.url.replace("http", "ws")}${path}`

const metric = async (node: RunningNode, series: string) => {
  const text = await (await fetch(`${node.url}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

const waitFor = async <A>(what: string, f: () => A | undefined | Promise<A | undefined>, ms = 5_000) => {
  const deadline = Date.now() + ms
  for (;;) {
    const found = await f()
    if (found !== undefined) return found
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

describe("the token on the upgrade", () => {
  const token = "s3cret-token"
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode({ token: Option.some(Redacted.make(token)) })
  })
  afterAll(() => node.stop())

  it("ingest and tail upgrades without a valid token are answered 401; no WebSocket is made", async () => {
    for (const path of ["/v1/ingest", "/v1/tail"]) {
      const url = wsUrl(node, path)
      expect((await upgradeStatus(url)).status, path).toBe(401)
      expect((await upgradeStatus(url, { headers: { authorization: "Bearer wrong" } })).status, path).toBe(
        401
      )
      expect((await upgradeStatus(url, { headers: { authorization: token } })).status, path).toBe(401)
      for (const scheme of ["Bearer", "bearer", "BEARER"])
        expect(
          (await upgradeStatus(url, { headers: { authorization: `${scheme} ${token}` } })).status,
          `${path} ${scheme}`
        ).toBe(101)
    }
    expect(
      await metric(node, 'iii_obs_connections_refused_total{endpoint="ingest",reason="unauthorized"}')
    ).toBe(3)
    expect(
      await metric(node, 'iii_obs_connections_refused_total{endpoint="tail",reason="unauthorized"}')
    ).toBe(3)
  })

  it("a token only in the hello frame no longer opens ingest", async () => {
    const agent = new TestAgent(node.url)
    await expect(agent.opened()).rejects.toThrow("401")
  })

  it("browsers send the token as a subprotocol beside iii.tail, which the node selects", async () => {
    const bearer = `iii.bearer.${Buffer.from(token).toString("base64url")}`
    const opened = await upgradeStatus(wsUrl(node, "/v1/tail"), { protocols: ["iii.tail", bearer] })
    expect(opened).toEqual({ status: 101, protocol: "iii.tail" })
    const wrong = `iii.bearer.${Buffer.from("nope").toString("base64url")}`
    expect((await upgradeStatus(wsUrl(node, "/v1/tail"), { protocols: ["iii.tail", wrong] })).status).toBe(
      401
    )
  })

  it("HTTP queries take the scheme in any case too", async () => {
    expect((await getJson(`${node.url}/v1/services`, { authorization: `bearer ${token}` })).status).toBe(200)
    expect((await getJson(`${node.url}/v1/services`, { authorization: "bearer nope" })).status).toBe(401)
  })
})

describe("deadlines and keep-alive", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode({ helloTimeout: Duration.millis(400), pingInterval: Duration.millis(300) })
  })
  afterAll(() => node.stop())

  it("defaults: hello within 10 s, a ping every 30 s", () => {
    expect(Duration.toMillis(ObsNodeConfig.defaults.helloTimeout)).toBe(10_000)
    expect(Duration.toMillis(ObsNodeConfig.defaults.pingInterval)).toBe(30_000)
  })

  it("connections that never say hello are closed at the deadline with a protocol error", async () => {
    const silent = Array.from({ length: 10 }, () => new TestAgent(node.url))
    await Promise.all(silent.map((a) => a.opened()))
    const started = Date.now()
    const closes = await Promise.all(silent.map((a) => a.closedWith()))
    expect(Date.now() - started).toBeLessThan(3_000)
    for (const close of closes) expect(close.code).toBe(1008)
    expect(silent[0]?.frames[0]).toMatchObject({ type: "error", code: "protocol", fatal: true })
    expect(
      await metric(node, 'iii_obs_connections_closed_total{endpoint="ingest",reason="hello_timeout"}')
    ).toBe(10)
  })

  it("a connection that said hello and answers pings stays open while idle", async () => {
    const agent = new TestAgent(node.url)
    expect(await agent.hello("idle-agent")).toMatchObject({ type: "welcome" })
    await new Promise((r) => setTimeout(r, 1_500))
    expect(agent.closed).toBeUndefined()
    agent.send({ type: "batch", seq: 1, spans: [span()], metrics: [], logs: [] })
    expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
    agent.close()
  })

  it("peers that stop answering pings are dropped: ingest after hello, and tail", async () => {
    const deaf = Array.from(
      { length: 5 },
      () => new WebSocket(wsUrl(node, "/v1/ingest"), { autoPong: false })
    )
    await Promise.all(deaf.map((ws) => new Promise((r) => ws.once("open", r))))
    for (const ws of deaf)
      ws.send(
        WireProtocol.encodeFrame({
          type: "hello",
          version: WireProtocol.PROTOCOL_VERSION,
          agent: { id: `deaf-${Math.random()}` }
        })
      )
    const tail = new WebSocket(wsUrl(node, "/v1/tail"), { autoPong: false })
    await new Promise((r) => tail.once("open", r))
    const closed = await Promise.all(
      [...deaf, tail].map((ws) => new Promise<number>((r) => ws.once("close", (code) => r(code))))
    )
    // Terminated (no close frame): the client sees 1006.
    for (const code of closed) expect(code).toBe(1006)
    expect(
      await metric(node, 'iii_obs_connections_closed_total{endpoint="ingest",reason="ping_timeout"}')
    ).toBeGreaterThanOrEqual(5)
    expect(
      await metric(node, 'iii_obs_connections_closed_total{endpoint="tail",reason="ping_timeout"}')
    ).toBeGreaterThanOrEqual(1)
  })

  it("an invalid batch before hello is fatal, like any frame before hello", async () => {
    const agent = new TestAgent(node.url)
    await agent.opened()
    agent.send({ type: "batch", seq: 1, spans: [span({ correlationId: "" })], metrics: [], logs: [] })
    expect(await agent.error()).toMatchObject({ code: "invalid_batch", fatal: true })
    expect((await agent.closedWith()).code).toBe(1008)
  })
})

describe("connection caps", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode({ maxIngestConnections: 3, maxTailSubscribers: 1 })
  })
  afterAll(() => node.stop())

  it("upgrades past the cap are answered 503, and counted", async () => {
    const agents = Array.from({ length: 3 }, () => new TestAgent(node.url))
    await Promise.all(agents.map((a) => a.opened()))
    expect((await upgradeStatus(wsUrl(node, "/v1/ingest"))).status).toBe(503)
    const subscriber = new WebSocket(wsUrl(node, "/v1/tail"))
    await new Promise((r) => subscriber.once("open", r))
    expect((await upgradeStatus(wsUrl(node, "/v1/tail"))).status).toBe(503)
    expect(await metric(node, 'iii_obs_connections_refused_total{endpoint="ingest",reason="cap"}')).toBe(1)
    expect(await metric(node, 'iii_obs_connections_refused_total{endpoint="tail",reason="cap"}')).toBe(1)
    // Room again once one closes.
    agents[0]?.close()
    await agents[0]?.closedWith()
    await waitFor("room", async () =>
      (await upgradeStatus(wsUrl(node, "/v1/ingest"))).status === 101 ? true : undefined
    )
    for (const a of agents) a.close()
    subscriber.close()
  })
})

describe("stalled tail subscribers", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode({ tailStallTimeout: Duration.millis(500) })
  })
  afterAll(() => node.stop())

  it("one whose socket stays full is closed after the stall timeout", async () => {
    const stalled = await pausedTailSubscriber(node.url)
    const closed = new Promise<number>((r) => stalled.ws.once("close", (code) => r(code)))
    const agent = new TestAgent(node.url)
    await agent.hello("stall-agent")
    const big = "x".repeat(2000)
    sendBulky(agent, 30, () => span({ attributes: { payload: big } }))
    expect(await agent.ack(30)).toEqual({ type: "ack", seq: 30 })
    await waitFor("the stalled subscriber closed", async () =>
      (await metric(node, 'iii_obs_connections_closed_total{endpoint="tail",reason="stalled"}')) === 1
        ? true
        : undefined
    )
    // The client reads again and finds the connection dropped (no close frame could get through).
    stalled.resume()
    expect(await closed).toBe(1006)
    expect(await metric(node, "iii_obs_tail_subscribers")).toBe(0)
    agent.close()
  })
})
