/**
 * OTLP/HTTP ingest end to end: OpenTelemetry's JS SDK and its OTLP exporters (protobuf and JSON, gzip
 * or not) send to a real node, and every span is read back by trace id with what the mapping keeps.
 */
import { SpanKind, SpanStatusCode } from "@opentelemetry/api"
import { OTLPLogExporter } from "@opentelemetry/exporter-logs-otlp-proto"
import { OTLPTraceExporter as JsonTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto"
import { CompressionAlgorithm } from "@opentelemetry/otlp-exporter-base"
import { Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { getJson, type RunningNode, startNode, TestAgent } from "./fixtures/Node.js"
import { logsBody, partialSuccess, post, sdkLogger, sdkTracer, traceBody } from "./fixtures/Otlp.js"
import { span as agentSpan } from "./fixtures/Spans.js"

const token = "otlp-test-token"
const auth = { authorization: `Bearer ${token}` }

/** Runs an SDK exporter's export and resolves with its result code (0 success). */
const exported = <T>(
  exporter: { export: (items: T, done: (r: { code: number; error?: Error }) => void) => void },
  items: T
) => new Promise<{ code: number; error?: Error }>((resolve) => exporter.export(items, resolve))

describe("OTLP/HTTP ingest", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode({ token: Option.some(Redacted.make(token)) })
  })
  afterAll(() => node.stop())

  const traceOf = async (traceId: string) => {
    const r = await getJson(`${node.url}/v1/traces/${traceId}`, auth)
    return r.status === 404 ? [] : (r.body.spans as Array<Record<string, unknown>>)
  }

  it("stores the SDK's spans sent as gzipped protobuf, read back by trace id with kind, status, attributes, events and links", async () => {
    const sdk = sdkTracer()
    const root = sdk.tracer.startSpan("GET /pay/{id}", {
      kind: SpanKind.SERVER,
      attributes: {
        "http.request.method": "GET",
        "http.route": "/pay/{id}",
        "url.path": "/pay/42",
        "http.response.status_code": 502,
        "order.id": 42,
        "order.express": true,
        "order.tags": ["a", "b"],
        "network.peer.address": "10.0.0.7",
        "network.peer.port": 51234
      }
    })
    root.addEvent("retry", { attempt: 2 })
    root.setStatus({ code: SpanStatusCode.ERROR, message: "upstream failed" })
    const child = sdk.tracer.startSpan("charge card", { kind: SpanKind.INTERNAL }, sdk.under(root))
    child.end()
    const producer = sdk.tracer.startSpan(
      "publish receipt",
      { kind: SpanKind.PRODUCER, links: [{ context: child.spanContext(), attributes: { why: "follows" } }] },
      sdk.under(root)
    )
    producer.end()
    root.end()
    const exporter = new OTLPTraceExporter({
      url: `${node.url}/v1/traces`,
      headers: auth,
      compression: CompressionAlgorithm.GZIP
    })
    expect(await exported(exporter, await sdk.finished())).toMatchObject({ code: 0 })
    await exporter.shutdown()

    const traceId = root.spanContext().traceId
    const spans = await traceOf(traceId)
    expect(spans).toHaveLength(3)
    const byName = new Map(spans.map((s) => [s.name, s]))
    expect(byName.get("GET /pay/{id}")).toMatchObject({
      traceId,
      spanId: root.spanContext().spanId,
      service: "payments",
      namespace: "shop",
      pod: "payments-7d9f-abcde",
      kind: "server",
      http: { method: "GET", route: "/pay/{id}", path: "/pay/42", statusCode: 502 },
      peerAddress: "10.0.0.7",
      peerPort: 51234,
      error: true,
      status: { code: "error", message: "upstream failed" },
      attributes: {
        "order.id": 42,
        "order.express": true,
        "order.tags": '["a","b"]',
        "k8s.container.name": "app",
        "k8s.node.name": "node-1",
        "otel.scope.name": "iii-otlp-test",
        "otel.scope.version": "1.2.3"
      },
      events: [{ name: "retry", attributes: { attempt: 2 } }]
    })
    const rootAttributes = byName.get("GET /pay/{id}")?.attributes as Record<string, unknown>
    // Mapped attributes leave the map: they live in the span's http and peer fields.
    expect(rootAttributes["http.route"]).toBeUndefined()
    expect(rootAttributes["service.name"]).toBeUndefined()
    expect(byName.get("charge card")).toMatchObject({
      kind: "internal",
      parentSpanId: root.spanContext().spanId,
      error: false
    })
    expect(byName.get("charge card")?.http).toBeUndefined()
    expect(byName.get("publish receipt")).toMatchObject({
      kind: "producer",
      links: [{ traceId, spanId: child.spanContext().spanId, attributes: { why: "follows" } }]
    })
    await sdk.shutdown()
  })

  it("stores OTLP/JSON from the SDK's http exporter, maps older HTTP conventions, and joins an agent's span in the same trace", async () => {
    const sdk = sdkTracer({ "service.name": "legacy-web" })
    const client = sdk.tracer.startSpan("GET", {
      kind: SpanKind.CLIENT,
      attributes: { "http.method": "GET", "http.target": "/stock/7?fresh=1", "http.status_code": 200 }
    })
    client.end()
    const exporter = new JsonTraceExporter({ url: `${node.url}/v1/traces`, headers: auth })
    expect(await exported(exporter, await sdk.finished())).toMatchObject({ code: 0 })
    await exporter.shutdown()

    const { traceId, spanId } = client.spanContext()
    // The agent captured the server side of the same request: a child of the SDK's client span.
    const agent = new TestAgent(node.url, auth)
    await agent.hello("agent-otlp-join")
    const server = agentSpan({
      service: "stock",
      traceId: traceId as never,
      correlationId: traceId,
      parentSpanId: spanId as never
    })
    agent.send({ type: "batch", seq: 1, spans: [server], metrics: [], logs: [] })
    expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
    agent.close()

    const spans = await traceOf(traceId)
    expect(spans.map((s) => s.service).sort()).toEqual(["legacy-web", "stock"])
    const sdkSpan = spans.find((s) => s.service === "legacy-web")
    expect(sdkSpan).toMatchObject({
      kind: "client",
      http: { method: "GET", route: "GET", path: "/stock/7", statusCode: 200 },
      attributes: { "http.target": "/stock/7?fresh=1" }
    })
    expect(spans.find((s) => s.service === "stock")).toMatchObject({ parentSpanId: spanId })
    expect(spans.find((s) => s.service === "stock")?.parentMissing).toBeUndefined()
    await sdk.shutdown()
  })

  it("stores the SDK's log records sent as protobuf, tied to their trace", async () => {
    const tracing = sdkTracer()
    const parent = tracing.tracer.startSpan("settle")
    parent.end()
    const logging = sdkLogger()
    logging.logger.emit({
      severityNumber: 17,
      severityText: "ERROR",
      body: "card declined",
      attributes: { "card.brand": "visa" },
      context: tracing.under(parent)
    })
    const exporter = new OTLPLogExporter({ url: `${node.url}/v1/logs`, headers: auth })
    expect(await exported(exporter, await logging.finished())).toMatchObject({ code: 0 })
    await exporter.shutdown()

    const { traceId, spanId } = parent.spanContext()
    const r = await getJson(`${node.url}/v1/correlate/${traceId}`, auth)
    expect(r.status).toBe(200)
    expect(r.body.logs).toEqual([
      expect.objectContaining({
        service: "payments",
        pod: "payments-7d9f-abcde",
        level: "error",
        body: "card declined",
        traceId,
        spanId,
        attributes: expect.objectContaining({ "card.brand": "visa", "k8s.container.name": "app" })
      })
    ])
    await Promise.all([tracing.shutdown(), logging.shutdown()])
  })

  it("stores a retried request once: spans by their ids, log records by the request's identity", async () => {
    const tracing = sdkTracer()
    const root = tracing.tracer.startSpan("retry me")
    tracing.tracer.startSpan("child", {}, tracing.under(root)).end()
    root.end()
    const logging = sdkLogger()
    logging.logger.emit({ body: "once", context: tracing.under(root) })
    const spans = traceBody(await tracing.finished())
    const logs = logsBody(await logging.finished())
    const headers = { ...auth, "content-type": "application/x-protobuf" }
    for (let i = 0; i < 3; i++) {
      expect((await post(`${node.url}/v1/traces`, spans, headers)).status).toBe(200)
      expect((await post(`${node.url}/v1/logs`, logs, headers)).status).toBe(200)
    }
    const traceId = root.spanContext().traceId
    expect(await traceOf(traceId)).toHaveLength(2)
    const r = await getJson(`${node.url}/v1/correlate/${traceId}`, auth)
    expect(r.body.logs).toHaveLength(1)
    await Promise.all([tracing.shutdown(), logging.shutdown()])
  })

  it("leaves out a span the store cannot index (a service name longer than index keys hold) and stores the rest", async () => {
    const fine = sdkTracer()
    const huge = sdkTracer({ "service.name": "s".repeat(2_000) })
    const kept = fine.tracer.startSpan("kept", { kind: SpanKind.SERVER })
    kept.end()
    const left = huge.tracer.startSpan("left out", { kind: SpanKind.SERVER })
    left.end()
    const body = traceBody([...(await fine.finished()), ...(await huge.finished())])
    const answer = await post(`${node.url}/v1/traces`, body, {
      ...auth,
      "content-type": "application/x-protobuf"
    })
    expect(answer.status).toBe(200)
    const partial = partialSuccess(answer.body)
    expect(Number(partial?.rejectedSpans)).toBe(1)
    expect(partial?.errorMessage).toMatch(
      new RegExp(`span ${left.spanContext().spanId}: .*index keys hold at most`)
    )
    expect(await traceOf(kept.spanContext().traceId)).toHaveLength(1)
    expect(await traceOf(left.spanContext().traceId)).toHaveLength(0)
    await Promise.all([fine.shutdown(), huge.shutdown()])
  })

  it("answers a partial success naming the spans outside the ingest window, and stores the rest", async () => {
    const sdk = sdkTracer()
    const now = sdk.tracer.startSpan("now")
    now.end()
    const future = sdk.tracer.startSpan("next week", { startTime: new Date(Date.now() + 7 * 86_400_000) })
    future.end(new Date(Date.now() + 7 * 86_400_000 + 5))
    const answer = await post(`${node.url}/v1/traces`, traceBody(await sdk.finished()), {
      ...auth,
      "content-type": "application/x-protobuf"
    })
    expect(answer.status).toBe(200)
    expect(answer.headers.get("content-type")).toBe("application/x-protobuf")
    const partial = partialSuccess(answer.body)
    expect(Number(partial?.rejectedSpans)).toBe(1)
    expect(partial?.errorMessage).toMatch(/ahead of this node's clock/)
    expect(await traceOf(now.spanContext().traceId)).toHaveLength(1)
    expect(await traceOf(future.spanContext().traceId)).toHaveLength(0)

    // The same in OTLP/JSON: the answer is JSON, its count a string as proto3 JSON writes int64.
    const json = JSON.stringify({
      resourceSpans: [
        {
          scopeSpans: [
            {
              spans: [
                {
                  traceId: "5b8efff798038103d269b633813fc60c",
                  spanId: "eee19b7ec3c1b174",
                  name: "from the future",
                  startTimeUnixNano: `${BigInt(Date.now() + 7 * 86_400_000) * 1_000_000n}`,
                  endTimeUnixNano: `${BigInt(Date.now() + 7 * 86_400_000) * 1_000_000n + 1000n}`
                }
              ]
            }
          ]
        }
      ]
    })
    const jsonAnswer = await post(`${node.url}/v1/traces`, json, {
      ...auth,
      "content-type": "application/json"
    })
    expect(jsonAnswer.status).toBe(200)
    expect(jsonAnswer.headers.get("content-type")).toBe("application/json")
    expect(JSON.parse(Buffer.from(jsonAnswer.body).toString())).toMatchObject({
      partialSuccess: { rejectedSpans: "1", errorMessage: expect.stringMatching(/ahead/) }
    })
    await sdk.shutdown()
  })
})
