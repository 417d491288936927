/**
 * OTLP out: a real node forwards what it stores to a local OTLP/HTTP receiver (node:http on
 * 127.0.0.1, decoding with the node's own proto module): ids and attributes arrive; the receiver
 * answering 503 or closed for a while loses nothing within the queue; an overflowing queue drops the
 * oldest and counts it; a restarted node sends what its queue kept.
 */
import { readdirSync } from "node:fs"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import type { Telemetry } from "@iii/core"
import { Duration, Either, Option } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as OtlpProto from "../src/internal/otlp/OtlpProto.js"
import { makeExportConfig, type OtlpExportConfig } from "../src/ObsNodeConfig.js"
import { type RunningNode, startNode, TestAgent, tempDir } from "./fixtures/Node.js"
import { log, span, t0 } from "./fixtures/Spans.js"

/** A local OTLP/HTTP receiver: answers `status` (200 by default) and keeps what it took. */
class Receiver {
  status = 200
  retryAfter: string | undefined
  readonly traces: Array<OtlpProto.TracesRequest> = []
  readonly logs: Array<OtlpProto.LogsRequest> = []
  readonly metrics: Array<OtlpProto.MetricsRequest> = []
  readonly seen: Array<{ path: string; status: number; headers: Record<string, unknown> }> = []
  private server: Server | undefined
  port = 0

  async start(port = 0): Promise<this> {
    const server = createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (c: Buffer) => chunks.push(c))
      req.on("end", () => {
        const path = req.url ?? ""
        this.seen.push({ path, status: this.status, headers: req.headers })
        if (this.status !== 200) {
          res.writeHead(this.status, this.retryAfter === undefined ? {} : { "retry-after": this.retryAfter })
          return res.end()
        }
        const signal = path.slice("/v1/".length) as OtlpProto.Signal
        const body = Buffer.concat(chunks)
        const decoded = OtlpProto.decodeRequest(signal, "protobuf", body)
        if (Either.isLeft(decoded)) {
          res.writeHead(400)
          return res.end()
        }
        if (signal === "traces") this.traces.push(decoded.right as OtlpProto.TracesRequest)
        if (signal === "logs") this.logs.push(decoded.right as OtlpProto.LogsRequest)
        if (signal === "metrics") this.metrics.push(decoded.right as OtlpProto.MetricsRequest)
        res.writeHead(200, { "content-type": "application/x-protobuf" })
        res.end()
      })
    })
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve))
    this.server = server
    this.port = (server.address() as AddressInfo).port
    return this
  }

  get url() {
    return `http://127.0.0.1:${this.port}`
  }

  stop(): Promise<void> {
    const server = this.server
    this.server = undefined
    return new Promise((resolve) => {
      if (server === undefined) return resolve()
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }

  spans() {
    return this.traces.flatMap((r) =>
      (r.resourceSpans ?? []).flatMap((rs) =>
        (rs.scopeSpans ?? []).flatMap((ss) =>
          (ss.spans ?? []).map((s) => ({ resource: rs.resource, span: s }))
        )
      )
    )
  }

  logRecords() {
    return this.logs.flatMap((r) =>
      (r.resourceLogs ?? []).flatMap((rl) => (rl.scopeLogs ?? []).flatMap((sl) => sl.logRecords ?? []))
    )
  }
}

const attrs = (kvs: ReadonlyArray<OtlpProto.KeyValue> | undefined) =>
  Object.fromEntries(
    (kvs ?? []).map((kv) => [
      kv.key,
      kv.value?.stringValue ??
        kv.value?.boolValue ??
        kv.value?.doubleValue ??
        OtlpProto.int64(kv.value?.intValue)
    ])
  )

const hex = (b: Uint8Array | undefined) => (b === undefined ? undefined : Buffer.from(b).toString("hex"))

const until = async (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000) => {
  const end = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const metricsText = async (node: RunningNode) => (await fetch(`${node.url}/metrics`)).text()

const figure = (text: string, series: string) => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

/** Items in the node's export queue (its files are named {seq}-{signal}-{items}.pb). */
const queuedItems = (node: RunningNode) =>
  readdirSync(join(node.dataDir, "otlp-export")).reduce(
    (n, f) => n + Number(/-(\d+)\.pb$/.exec(f)?.[1] ?? Number.NaN),
    0
  )

const fast = (url: string, overrides: Partial<Omit<OtlpExportConfig, "url">> = {}) =>
  Option.some(
    makeExportConfig(url, {
      initialBackoff: Duration.millis(50),
      maxBackoff: Duration.millis(200),
      requestTimeout: Duration.seconds(2),
      ...overrides
    })
  )

let seq = 0
const ingest = async (
  node: RunningNode,
  spans: ReadonlyArray<Telemetry.Span>,
  extra: { logs?: ReadonlyArray<Telemetry.LogRecord>; metrics?: ReadonlyArray<Telemetry.MetricPoint> } = {}
) => {
  const agent = new TestAgent(node.url)
  await agent.hello(`agent-${++seq}`)
  agent.send({ type: "batch", seq: 1, spans, logs: extra.logs ?? [], metrics: extra.metrics ?? [] })
  const ack = await agent.ack(1)
  agent.close()
  expect(ack?.type).toBe("ack")
}

describe("OTLP export", () => {
  const cleanups: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it("forwards stored spans, logs and metric points with their ids, resource and attributes", async () => {
    const receiver = await new Receiver().start()
    cleanups.push(() => receiver.stop())
    const node = await startNode({
      exportOtlp: fast(receiver.url, { headers: [["authorization", "Bearer to-the-collector"]] })
    })
    cleanups.push(() => node.stop())
    const parent = span({ trace: 7001 })
    const child = span({
      trace: 7001,
      parentSpanId: parent.spanId,
      kind: "client",
      attributes: { "order.id": 42, "order.express": true },
      status: { code: "error", message: "card declined" },
      error: true,
      events: [{ timeUnixNano: t0, name: "retry", attributes: { attempt: 2 } }]
    })
    const point: Telemetry.MetricPoint = {
      name: "orders.placed",
      kind: "counter",
      service: "checkout",
      timeUnixNano: t0,
      intervalNano: 10_000_000_000,
      value: 3,
      attributes: { region: "eu" }
    }
    await ingest(node, [parent, child], {
      logs: [log({ traceId: parent.traceId, spanId: parent.spanId, body: "charged", level: "warn" })],
      metrics: [point]
    })
    await until(
      "everything",
      () =>
        receiver.spans().length === 2 && receiver.logRecords().length === 1 && receiver.metrics.length === 1
    )

    const got = receiver.spans()
    const c = got.find((s) => hex(s.span.spanId) === child.spanId)
    expect(c).toBeDefined()
    expect(hex(c?.span.traceId)).toBe(child.traceId)
    expect(hex(c?.span.parentSpanId)).toBe(parent.spanId)
    expect(c?.span.kind).toBe(3)
    expect(c?.span.status).toEqual({ code: 2, message: "card declined" })
    expect(OtlpProto.int64(c?.span.endTimeUnixNano)).toBe(
      child.startTimeUnixNano + BigInt(child.durationNano)
    )
    expect(c?.span.events?.[0]?.name).toBe("retry")
    expect(attrs(c?.span.attributes)).toMatchObject({
      "order.id": 42n,
      "order.express": true,
      "http.request.method": "GET",
      "http.route": "/cart/{id}",
      "http.response.status_code": 200n
    })
    expect(attrs(c?.resource?.attributes)).toMatchObject({
      "service.name": "checkout",
      "k8s.namespace.name": "default",
      "k8s.pod.name": "checkout-1"
    })
    const l = receiver.logRecords()[0]
    expect(hex(l?.traceId)).toBe(parent.traceId)
    expect(hex(l?.spanId)).toBe(parent.spanId)
    expect(l?.body?.stringValue).toBe("charged")
    expect(l?.severityNumber).toBe(13)
    const m = receiver.metrics[0]?.resourceMetrics?.[0]?.scopeMetrics?.[0]?.metrics?.[0]
    expect(m?.name).toBe("orders.placed")
    expect(m?.sum?.isMonotonic).toBe(true)
    expect(m?.sum?.dataPoints?.[0]?.asDouble).toBe(3)
    expect(attrs(m?.sum?.dataPoints?.[0]?.attributes)).toEqual({ region: "eu" })
    expect(receiver.seen.every((s) => s.headers.authorization === "Bearer to-the-collector")).toBe(true)

    const text = await metricsText(node)
    expect(figure(text, 'iii_obs_otlp_export_sent_total{signal="traces"}')).toBe(2)
    expect(figure(text, 'iii_obs_otlp_export_sent_total{signal="logs"}')).toBe(1)
    expect(figure(text, 'iii_obs_otlp_export_sent_total{signal="metrics"}')).toBe(1)
    expect(figure(text, "iii_obs_otlp_export_queue_requests")).toBe(0)
  })

  it("keeps everything while the receiver answers 503 and then is closed, and sends it once it is back", async () => {
    const receiver = await new Receiver().start()
    cleanups.push(() => receiver.stop())
    receiver.status = 503
    receiver.retryAfter = "0"
    const node = await startNode({ exportOtlp: fast(receiver.url) })
    cleanups.push(() => node.stop())
    const sent: Array<Telemetry.Span> = []
    for (let i = 0; i < 3; i++) {
      const batch = Array.from({ length: 10 }, () => span({ trace: 8000 + i }))
      sent.push(...batch)
      await ingest(node, batch)
    }
    await until("a 503", () => receiver.seen.length >= 2)
    const port = receiver.port
    await receiver.stop()
    for (let i = 0; i < 2; i++) {
      const batch = Array.from({ length: 10 }, () => span({ trace: 8100 + i }))
      sent.push(...batch)
      await ingest(node, batch)
    }
    await new Promise((r) => setTimeout(r, 400))
    const down = await metricsText(node)
    expect(figure(down, 'iii_obs_otlp_export_sent_total{signal="traces"}')).toBe(0)
    expect(figure(down, "iii_obs_otlp_export_queue_requests")).toBeGreaterThan(0)
    receiver.status = 200
    await receiver.start(port)
    await until("every span", () => receiver.spans().length >= sent.length)
    expect(new Set(receiver.spans().map((s) => hex(s.span.spanId)))).toEqual(
      new Set(sent.map((s) => s.spanId))
    )
    expect(receiver.spans()).toHaveLength(sent.length)
    const text = await metricsText(node)
    expect(figure(text, 'iii_obs_otlp_export_sent_total{signal="traces"}')).toBe(sent.length)
    expect(figure(text, "iii_obs_otlp_export_retried_total")).toBeGreaterThanOrEqual(2)
    expect(figure(text, 'iii_obs_otlp_export_dropped_total{signal="traces",reason="queue_full"}')).toBe(0)
    expect(figure(text, "iii_obs_otlp_export_queue_requests")).toBe(0)
  })

  it("acknowledges ingest at once while the endpoint hangs without answering", async () => {
    const hanging = createServer(() => undefined)
    await new Promise<void>((resolve) => hanging.listen(0, "127.0.0.1", resolve))
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          hanging.closeAllConnections()
          hanging.close(() => resolve())
        })
    )
    const node = await startNode({
      exportOtlp: fast(`http://127.0.0.1:${(hanging.address() as AddressInfo).port}`, {
        requestTimeout: Duration.seconds(30)
      })
    })
    cleanups.push(() => node.stop())
    const started = performance.now()
    for (let i = 0; i < 5; i++) await ingest(node, [span(), span()])
    expect(performance.now() - started).toBeLessThan(2_000)
    await until("the queue", () => queuedItems(node) === 10)
  })

  it("drops what the endpoint refuses with a 400, counted, and goes on", async () => {
    const receiver = await new Receiver().start()
    cleanups.push(() => receiver.stop())
    receiver.status = 400
    const node = await startNode({ exportOtlp: fast(receiver.url) })
    cleanups.push(() => node.stop())
    await ingest(node, [span(), span()])
    const series = 'iii_obs_otlp_export_dropped_total{signal="traces",reason="rejected"}'
    await until("the drop", async () => figure(await metricsText(node), series) === 2)
    const text = await metricsText(node)
    expect(figure(text, series)).toBe(2)
    expect(figure(text, "iii_obs_otlp_export_retried_total")).toBe(0)
  })

  it("drops the oldest requests past the queue's bound, counted", async () => {
    const node = await startNode({
      // Nothing listens there: every request is kept and retried.
      exportOtlp: fast("http://127.0.0.1:9", { maxQueueBytes: 6_000, initialBackoff: Duration.seconds(30) })
    })
    cleanups.push(() => node.stop())
    for (let i = 0; i < 8; i++)
      await ingest(
        node,
        Array.from({ length: 10 }, () => span({ trace: 9000 + i }))
      )
    await new Promise((r) => setTimeout(r, 200))
    const text = await metricsText(node)
    const dropped =
      figure(text, 'iii_obs_otlp_export_dropped_total{signal="traces",reason="queue_full"}') ?? 0
    const bytes = figure(text, "iii_obs_otlp_export_queue_bytes") ?? 0
    const files = readdirSync(join(node.dataDir, "otlp-export"))
    const queued = queuedItems(node)
    expect(figure(text, "iii_obs_otlp_export_queue_requests")).toBe(files.length)
    expect(bytes).toBeLessThanOrEqual(6_000)
    expect(bytes).toBeGreaterThan(0)
    expect(dropped).toBeGreaterThan(0)
    expect(dropped + queued).toBe(80)
  })

  it("sends after a restart what the queue held when the node stopped", async () => {
    const dir = tempDir()
    cleanups.push(() => dir.remove())
    const receiver = await new Receiver().start()
    cleanups.push(() => receiver.stop())
    receiver.status = 503
    const first = await startNode({ dataDir: dir.path, exportOtlp: fast(receiver.url) })
    const spans = Array.from({ length: 5 }, () => span({ trace: 9500 }))
    await ingest(first, spans)
    await until("a 503", () => receiver.seen.length >= 1)
    await first.stop()
    expect(receiver.spans()).toHaveLength(0)
    receiver.status = 200
    const second = await startNode({ dataDir: dir.path, exportOtlp: fast(receiver.url) })
    cleanups.push(() => second.stop())
    await until("the spans", () => receiver.spans().length === 5)
    expect(receiver.spans().map((s) => hex(s.span.spanId))).toEqual(spans.map((s) => s.spanId))
  })
})
