import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { graphOf } from "../src/internal/node/ServiceMap.js"
import { getJson, type RunningNode, startNode, TestAgent } from "./fixtures/Node.js"
import { span, spanId } from "./fixtures/Spans.js"

const now = () => BigInt(Date.now()) * 1_000_000n
const msAgo = (ms: number) => now() - BigInt(ms) * 1_000_000n
const ms = (n: number) => BigInt(n) * 1_000_000n

/** frontend → catalog by an exact parent link, frontend → payments by time only, and a call out to 10.0.0.9:5432. */
const checkout = (trace: number, at: bigint, paymentsFails: boolean) => {
  const front = span({ trace, service: "frontend", startTimeUnixNano: at, durationNano: 100_000_000 })
  const toCatalog = span({
    trace,
    service: "frontend",
    kind: "client",
    parentSpanId: front.spanId,
    startTimeUnixNano: at + ms(5),
    durationNano: 20_000_000,
    http: { method: "GET", route: "/products/{id}", statusCode: 200 }
  })
  const catalog = span({
    trace,
    service: "catalog",
    parentSpanId: toCatalog.spanId,
    startTimeUnixNano: at + ms(6),
    durationNano: 18_000_000,
    http: { method: "GET", route: "/products/{id}", statusCode: 200 }
  })
  const toPayments = span({
    trace,
    service: "frontend",
    kind: "client",
    parentSpanId: front.spanId,
    startTimeUnixNano: at + ms(30),
    durationNano: 60_000_000,
    http: { method: "POST", route: "/charges", statusCode: paymentsFails ? 502 : 201 },
    error: paymentsFails
  })
  // The parent is the caller's incoming context, which was never captured: matched by time.
  const payments = span({
    trace,
    service: "payments",
    parentSpanId: spanId(900_000 + trace),
    startTimeUnixNano: at + ms(31),
    durationNano: 58_000_000,
    http: { method: "POST", route: "/charges", statusCode: paymentsFails ? 502 : 201 },
    error: paymentsFails
  })
  const toDatabase = span({
    trace,
    service: "payments",
    kind: "client",
    parentSpanId: payments.spanId,
    startTimeUnixNano: at + ms(35),
    durationNano: 5_000_000,
    peerAddress: "10.0.0.9",
    peerPort: 5432,
    http: { method: "POST", route: "/query", statusCode: 200 }
  })
  return [front, toCatalog, catalog, toPayments, payments, toDatabase]
}

describe("service map", () => {
  it("pairs client and server spans by parent link, then by time, and names calls out by peer", () => {
    const graph = graphOf([checkout(1, ms(1_000), false), checkout(2, ms(2_000), true)])
    expect(
      graph.edges.map(({ caller, callee, external, calls, errors }) => ({
        caller,
        callee,
        external,
        calls,
        errors
      }))
    ).toEqual([
      { caller: "frontend", callee: "catalog", external: false, calls: 2, errors: 0 },
      { caller: "frontend", callee: "payments", external: false, calls: 2, errors: 1 },
      { caller: "payments", callee: "10.0.0.9:5432", external: true, calls: 2, errors: 0 }
    ])
    expect(graph.edges[1]?.p99Ms).toBe(60)
    expect(graph.nodes).toEqual([
      { service: "catalog", requests: 2, errors: 0, entries: 0 },
      { service: "frontend", requests: 2, errors: 0, entries: 2 },
      { service: "payments", requests: 2, errors: 1, entries: 0 }
    ])
  })

  it("gives a client span to one server span only, the innermost caller of another service", () => {
    const outer = span({
      trace: 7,
      service: "a",
      kind: "client",
      startTimeUnixNano: ms(0),
      durationNano: 50_000_000
    })
    const inner = span({
      trace: 7,
      service: "b",
      kind: "client",
      startTimeUnixNano: ms(10),
      durationNano: 20_000_000
    })
    const first = span({ trace: 7, service: "c", startTimeUnixNano: ms(12), durationNano: 5_000_000 })
    const second = span({ trace: 7, service: "c", startTimeUnixNano: ms(20), durationNano: 5_000_000 })
    const edges = graphOf([[outer, inner, first, second]]).edges.map((e) => `${e.caller}->${e.callee}`)
    // `first` takes b's call (innermost); `second` then takes a's; nothing is left unanswered.
    expect(edges).toEqual(["a->c", "b->c"])
  })

  describe("over HTTP", () => {
    let node: RunningNode
    beforeAll(async () => {
      node = await startNode()
      const agent = new TestAgent(node.url)
      await agent.hello("map-agent")
      const spans = Array.from({ length: 10 }, (_, i) =>
        checkout(100 + i, msAgo(20_000 - i * 1000), i % 5 === 0)
      ).flat()
      agent.send({ type: "batch", seq: 1, spans, metrics: [], logs: [] })
      await agent.ack(1)
      agent.close()
    })
    afterAll(() => node.stop())

    it("GET /v1/dependencies: edges with calls, errors and rates over the window", async () => {
      const r = await getJson(`${node.url}/v1/dependencies?since=5m`)
      expect(r.status).toBe(200)
      expect(r.body).toMatchObject({ tracesExamined: 10, complete: true, coveredSec: 300 })
      const edge = r.body.edges.find((e: { callee: string }) => e.callee === "payments")
      expect(edge).toMatchObject({ caller: "frontend", calls: 10, errors: 2, external: false })
      expect(edge.ratePerSec).toBeCloseTo(10 / 300)
      expect(r.body.nodes.map((n: { service: string }) => n.service)).toEqual([
        "catalog",
        "frontend",
        "payments"
      ])
    })

    it("GET /v1/dependencies?limit=4: the newest traces only, rates over the time they cover", async () => {
      const r = await getJson(`${node.url}/v1/dependencies?since=5m&limit=4`)
      expect(r.body).toMatchObject({ tracesExamined: 4, complete: false })
      expect(r.body.coveredSec).toBeGreaterThan(10)
      expect(r.body.coveredSec).toBeLessThan(30)
    })

    it("GET /v1/services/{service}/routes: each route the service served, with RED from the rollups", async () => {
      const r = await getJson(`${node.url}/v1/services/payments/routes?window=5m`)
      expect(r.status).toBe(200)
      expect(r.body.routes).toEqual([
        expect.objectContaining({ route: "/charges", requests: 10, errors: 2, errorRate: 0.2 })
      ])
      expect(r.body.routes[0].p99).toBeGreaterThan(50)
    })

    it("rejects bad parameters, naming them", async () => {
      for (const [query, parameter] of [
        ["dependencies?since=soon", "since"],
        ["dependencies?limit=0", "limit"],
        ["dependencies?since=1m&until=2m", "since"],
        ["dependencies?service=x", "service"],
        ["services/payments/routes?window=1s", "window"]
      ] as const) {
        const r = await getJson(`${node.url}/v1/${query}`)
        expect(r.status, query).toBe(400)
        expect(r.body.parameter, query).toBe(parameter)
      }
    })
  })
})
