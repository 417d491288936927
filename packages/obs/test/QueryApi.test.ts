import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { getJson, type RunningNode, startNode, TestAgent } from "./fixtures/Node.js"
import { log, span, traceId } from "./fixtures/Spans.js"

// One "now" for every fixture span: read per span, a busy machine's clock moved between them and
// reordered spans a millisecond apart.
const now = BigInt(Date.now()) * 1_000_000n
const msAgo = (ms: number) => now - BigInt(ms) * 1_000_000n

describe("query API", () => {
  let node: RunningNode
  const root = span({
    trace: 2000,
    startTimeUnixNano: msAgo(5000),
    correlationId: "order-42",
    durationNano: 250_000_000
  })
  const child = span({
    trace: 2000,
    parentSpanId: root.spanId,
    startTimeUnixNano: msAgo(4990),
    correlationId: "order-42",
    service: "payments",
    http: { method: "POST", route: "/charge", statusCode: 503 },
    error: true,
    durationNano: 200_000_000
  })
  const orphan = span({
    trace: 2000,
    parentSpanId: "00000000000000ff" as never,
    startTimeUnixNano: msAgo(4980)
  })
  const other = span({ trace: 2001, startTimeUnixNano: msAgo(3000) })
  const traffic = Array.from({ length: 100 }, (_, i) =>
    span({
      trace: 3000 + i,
      startTimeUnixNano: msAgo(2000 + i),
      durationNano: (i + 1) * 1_000_000,
      error: i < 5
    })
  )

  beforeAll(async () => {
    node = await startNode()
    const agent = new TestAgent(node.url)
    await agent.hello("query-agent")
    agent.send({
      type: "batch",
      seq: 1,
      spans: [root, child, orphan, other, ...traffic],
      metrics: [],
      logs: [
        log({ correlationId: "order-42", body: "charging card", timeUnixNano: msAgo(4990) }),
        log({ correlationId: "order-42", body: "card declined", level: "error", timeUnixNano: msAgo(4900) })
      ]
    })
    await agent.ack(1)
    agent.close()
  })
  afterAll(() => node.stop())

  it("GET /v1/traces/{traceId}: every span, ordered, with parent links", async () => {
    const r = await getJson(`${node.url}/v1/traces/${traceId(2000)}`)
    expect(r.status).toBe(200)
    expect(r.body.spans.map((s: { spanId: string }) => s.spanId)).toEqual([
      root.spanId,
      child.spanId,
      orphan.spanId
    ])
    expect(r.body.spans[1].parentSpanId).toBe(root.spanId)
    expect(r.body.spans[2].parentMissing).toBe(true)
    expect(r.body.spans[0].startTimeUnixNano).toBe(root.startTimeUnixNano.toString())
    expect((await getJson(`${node.url}/v1/traces/${traceId(9999)}`)).status).toBe(404)
    const bad = await getJson(`${node.url}/v1/traces/not-hex`)
    expect(bad.status).toBe(400)
    expect(bad.body.parameter).toBe("traceId")
  })

  it("GET /v1/traces: filtered summaries, newest first, with a cursor", async () => {
    const slow = await getJson(`${node.url}/v1/traces?service=payments&status=5xx&minDuration=200ms&since=1h`)
    expect(slow.status).toBe(200)
    expect(slow.body.traces.map((t: { traceId: string }) => t.traceId)).toEqual([traceId(2000)])
    expect(slow.body.traces[0]).toMatchObject({ rootService: "checkout", spanCount: 3, errorCount: 1 })
    const page1 = await getJson(`${node.url}/v1/traces?service=checkout&limit=10`)
    expect(page1.body.traces).toHaveLength(10)
    expect(page1.body.traces[0].traceId).toBe(traceId(3000))
    const page2 = await getJson(
      `${node.url}/v1/traces?service=checkout&limit=10&cursor=${page1.body.nextCursor}`
    )
    expect(page2.body.traces[0].traceId).toBe(traceId(3010))
    const errors = await getJson(`${node.url}/v1/traces?status=error&limit=100`)
    expect(errors.body.traces).toHaveLength(6)
  })

  it("GET /v1/traces: 400 naming the bad parameter", async () => {
    const cases: Array<[string, string]> = [
      ["status=6xx", "status"],
      ["minDuration=fast", "minDuration"],
      ["limit=0", "limit"],
      ["limit=abc", "limit"],
      ["since=yesterday", "since"],
      ["cursor=garbage", "cursor"],
      ["minduration=200ms", "minduration"],
      ["since=1m&until=2m", "since"],
      ["service=a&service=b", "service"]
    ]
    for (const [query, parameter] of cases) {
      const r = await getJson(`${node.url}/v1/traces?${query}`)
      expect(r.status, query).toBe(400)
      expect(r.body.parameter, query).toBe(parameter)
      expect(r.body.error, query).toContain(parameter)
    }
  })

  it("GET /v1/correlate/{id}: traces, logs and RED metrics of one id", async () => {
    const r = await getJson(`${node.url}/v1/correlate/order-42`)
    expect(r.status).toBe(200)
    expect(r.body.traces.map((t: { traceId: string }) => t.traceId)).toEqual([traceId(2000)])
    expect(r.body.traces[0].spans).toHaveLength(3)
    expect(r.body.logs.map((l: { body: string }) => l.body)).toEqual(["charging card", "card declined"])
    const payments = r.body.red.find((x: { service: string }) => x.service === "payments")
    expect(payments).toMatchObject({ route: "/charge", requests: 1, errors: 1, errorRate: 1 })
    expect(payments.p99).toBeGreaterThan(190)
    expect((await getJson(`${node.url}/v1/correlate/nothing-here`)).status).toBe(404)
    expect((await getJson(`${node.url}/v1/correlate/order-42?limit=x`)).body.parameter).toBe("limit")
  })

  it("GET /v1/services and /v1/services/{service}/red", async () => {
    const services = await getJson(`${node.url}/v1/services`)
    expect(services.body.services.map((s: { service: string }) => s.service)).toEqual([
      "checkout",
      "payments"
    ])
    const red = await getJson(`${node.url}/v1/services/checkout/red?window=1m&step=10s`)
    expect(red.status).toBe(200)
    expect(red.body.points).toHaveLength(6)
    const total = red.body.points.reduce((n: number, p: { requests: number }) => n + p.requests, 0)
    expect(total).toBe(103)
    const busiest = red.body.points.reduce((a: { requests: number }, b: { requests: number }) =>
      a.requests > b.requests ? a : b
    )
    expect(busiest.p50).toBeGreaterThan(0)
    expect(busiest.p99).toBeGreaterThanOrEqual(busiest.p50)
    // One step as long as the window is the total of the last hour, whatever the clock says: the
    // step ends with the current 10 s bucket, not at the top of the hour.
    const hour = await getJson(`${node.url}/v1/services/checkout/red?window=1h&step=1h`)
    const nowSec = Date.now() / 1000
    expect(hour.body.points).toHaveLength(1)
    expect(hour.body.points[0].requests).toBe(103)
    expect(hour.body.toSec).toBeGreaterThan(nowSec - 1)
    expect(hour.body.toSec).toBeLessThanOrEqual(nowSec + 10)
    expect(hour.body.toSec - hour.body.fromSec).toBe(3600)
    const route = await getJson(`${node.url}/v1/services/payments/red?window=5m&route=/charge`)
    expect(route.body.points.reduce((n: number, p: { errors: number }) => n + p.errors, 0)).toBe(1)
    for (const [query, parameter] of [
      ["window=5", "window"],
      ["step=15s", "step"],
      ["window=1m&step=5m", "step"],
      ["window=30d", "window"],
      ["bogus=1", "bogus"]
    ]) {
      const bad = await getJson(`${node.url}/v1/services/checkout/red?${query}`)
      expect(bad.status, query).toBe(400)
      expect(bad.body.parameter, query).toBe(parameter)
    }
  })

  it("health, readiness, metrics, unknown paths and methods", async () => {
    expect((await getJson(`${node.url}/healthz`)).status).toBe(200)
    expect((await getJson(`${node.url}/readyz`)).status).toBe(200)
    const metrics = await (await fetch(`${node.url}/metrics`)).text()
    for (const name of [
      "iii_obs_spans_ingested_total",
      "iii_obs_ingest_queue_depth",
      "iii_obs_store_bytes",
      "iii_obs_tail_subscribers"
    ])
      expect(metrics).toContain(`# TYPE ${name}`)
    expect(metrics).toMatch(/iii_obs_spans_ingested_total 10[0-9]/)
    expect((await getJson(`${node.url}/v1/nope`)).status).toBe(404)
    expect((await getJson(`${node.url}/v1/correlate/%ZZ`)).body.parameter).toBe("path")
    expect((await fetch(`${node.url}/v1/services`, { method: "POST" })).status).toBe(405)
    // POST /v1/traces is OTLP ingest: a body of no OTLP content type is refused as such.
    expect((await fetch(`${node.url}/v1/traces`, { method: "POST" })).status).toBe(415)
  })
})
