import { Unpackr } from "msgpackr"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import type { TailSink } from "../src/internal/node/TailHub.js"
import { TailHub } from "../src/internal/node/TailHub.js"
import { pausedTailSubscriber, type RunningNode, sendBulky, startNode, TestAgent } from "./fixtures/Node.js"
import { span } from "./fixtures/Spans.js"

const tailUrl = (node: RunningNode, query: string) => `${node.url.replace("http", "ws")}/v1/tail?${query}`

/** Opens a tail and collects spans (decoded) until `count` arrived. */
const openTail = async (url: string) => {
  const ws = new WebSocket(url)
  const spans: Array<{ service: string; traceId: string; startTimeUnixNano: unknown }> = []
  const unpackr = new Unpackr({ useRecords: false })
  ws.on("message", (data, isBinary) => {
    const msg = isBinary ? unpackr.unpack(data as Buffer) : JSON.parse(String(data))
    if (msg.type === "spans") spans.push(...msg.spans)
  })
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve())
    ws.once("error", reject)
  })
  const until = async (count: number) => {
    while (spans.length < count) await new Promise((r) => setTimeout(r, 5))
    return spans
  }
  return { ws, spans, until }
}

describe("live tail", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode()
  })
  afterAll(() => node.stop())

  it("streams committed spans matching the filters, as JSON or MessagePack", async () => {
    const payments = await openTail(tailUrl(node, "service=payments&status=5xx&minDuration=100ms"))
    const all = await openTail(tailUrl(node, ""))
    const packed = await openTail(tailUrl(node, "route=/charge&format=msgpack"))
    const agent = new TestAgent(node.url)
    await agent.hello("tail-agent")
    const match = span({
      service: "payments",
      durationNano: 150_000_000,
      http: { method: "POST", route: "/charge", statusCode: 502 }
    })
    const tooFast = span({
      service: "payments",
      durationNano: 1_000_000,
      http: { method: "POST", route: "/charge", statusCode: 500 }
    })
    const ok = span({
      service: "payments",
      durationNano: 300_000_000,
      http: { method: "GET", route: "/x", statusCode: 200 }
    })
    const elsewhere = span({ service: "checkout", durationNano: 300_000_000 })
    agent.send({ type: "batch", seq: 1, spans: [tooFast, ok, match, elsewhere], metrics: [], logs: [] })
    await agent.ack(1)
    expect((await all.until(4)).length).toBe(4)
    expect(all.spans[0]?.startTimeUnixNano).toBe(tooFast.startTimeUnixNano.toString())
    const got = await payments.until(1)
    const packedGot = await packed.until(2)
    // A later batch proves nothing else was coming for the filtered subscribers.
    agent.send({ type: "batch", seq: 2, spans: [span({ service: "zzz" })], metrics: [], logs: [] })
    await all.until(5)
    await new Promise((r) => setTimeout(r, 50))
    expect(got.map((s) => s.traceId)).toEqual([match.traceId])
    expect(packedGot.map((s) => s.traceId)).toEqual([tooFast.traceId, match.traceId])
    expect(packedGot[0]?.startTimeUnixNano).toBe(tooFast.startTimeUnixNano)
    for (const t of [payments, all, packed]) t.ws.close()
    agent.close()
  })

  it("rejects invalid filters with 400 naming the parameter", async () => {
    const cases: Array<[string, string]> = [
      ["status=teapot", "status"],
      ["minDuration=slow", "minDuration"],
      ["format=xml", "format"],
      ["servce=x", "servce"]
    ]
    for (const [query, parameter] of cases) {
      const ws = new WebSocket(tailUrl(node, query))
      const response = await new Promise<{ status: number; body: string }>((resolve) => {
        ws.on("unexpected-response", (_req, res) => {
          let body = ""
          res.on("data", (c: Buffer) => {
            body += c.toString()
          })
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
        })
      })
      expect(response.status, query).toBe(400)
      expect(JSON.parse(response.body).parameter, query).toBe(parameter)
    }
  })

  it("drops spans for a slow subscriber with a notice, without holding back others", async () => {
    const hub = new TailHub({ maxQueuedSpans: 10, maxBufferedBytes: 1000, maxStalledMs: 60_000 })
    const slowSent: Array<string> = []
    let slowBuffered = 1_000_000
    const slow: TailSink = {
      send: (d) => slowSent.push(Buffer.from(d).toString()),
      bufferedAmount: () => slowBuffered,
      close: () => undefined
    }
    const fastSent: Array<string> = []
    const fast: TailSink = {
      send: (d) => fastSent.push(Buffer.from(d).toString()),
      bufferedAmount: () => 0,
      close: () => undefined
    }
    hub.subscribe({ format: "json" }, slow)
    hub.subscribe({ format: "json" }, fast)
    for (let i = 0; i < 5; i++) {
      hub.publish(
        Array.from({ length: 10 }, () => span()),
        Date.now()
      )
      await new Promise((r) => setImmediate(r))
    }
    // The fast subscriber got everything; the slow one nothing yet, its queue capped at 10.
    const fastSpans = fastSent.map((m) => JSON.parse(m)).flatMap((m) => m.spans)
    expect(fastSpans).toHaveLength(50)
    expect(slowSent).toHaveLength(0)
    expect(hub.droppedTotal).toBe(40)
    slowBuffered = 0
    await new Promise((r) => setTimeout(r, 60))
    const messages = slowSent.map((m) => JSON.parse(m))
    expect(messages[0]).toMatchObject({ type: "dropped", dropped: 40, totalDropped: 40 })
    expect(messages[1].type).toBe("spans")
    expect(messages[1].spans).toHaveLength(10)
  })

  it("streams a span with events (bigint times) as JSON", async () => {
    const hub = new TailHub({ maxQueuedSpans: 10, maxBufferedBytes: 1000, maxStalledMs: 60_000 })
    const sent: Array<string> = []
    hub.subscribe(
      { format: "json" },
      { send: (d) => sent.push(Buffer.from(d).toString()), bufferedAmount: () => 0, close: () => undefined }
    )
    const withEvent = { ...span(), events: [{ timeUnixNano: 1_700_000_000_123_456_789n, name: "exception" }] }
    hub.publish([withEvent], Date.now())
    await new Promise((r) => setImmediate(r))
    expect(JSON.parse(sent[0] ?? "{}").spans[0].events).toEqual([
      { timeUnixNano: "1700000000123456789", name: "exception" }
    ])
  })

  it("a subscriber that never reads does not slow ingest or grow memory", async () => {
    // It stops reading from its socket: the node's send buffer fills, then it drops.
    const stalled = await pausedTailSubscriber(node.url)
    const agent = new TestAgent(node.url)
    await agent.hello("stall-agent")
    const big = "x".repeat(2000)
    sendBulky(agent, 40, () => span({ attributes: { payload: big } }))
    expect(await agent.ack(40)).toEqual({ type: "ack", seq: 40 })
    const metrics = await (await fetch(`${node.url}/metrics`)).text()
    const dropped = Number(/iii_obs_tail_spans_dropped_total (\d+)/.exec(metrics)?.[1])
    expect(dropped).toBeGreaterThan(0)
    stalled.ws.terminate()
    agent.close()
  })
})
