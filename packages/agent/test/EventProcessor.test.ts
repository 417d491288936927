import type { Telemetry } from "@iii/core"
import { describe, expect, it } from "vitest"
import type { CaptureEvent } from "../src/CaptureEvent.js"
import { EventProcessor } from "../src/internal/EventProcessor.js"
import * as F from "./fixtures/http.js"

const pid = 100
const base = 1_700_000_000_000_000_000n

/** A small event script: timestamps advance 1 ms per event. */
const script = () => {
  const events: Array<CaptureEvent> = []
  let t = base
  const next = () => {
    t += 1_000_000n
    return t
  }
  return {
    events,
    accept: (fd: number, peerPort = 50000) =>
      events.push({
        kind: "open",
        timestampNs: next(),
        target: 1,
        pid,
        tid: pid,
        fd,
        family: 4,
        localAddress: "127.0.0.1",
        localPort: 8080,
        peerAddress: "10.0.0.7",
        peerPort
      }),
    connect: (fd: number, tid = pid) =>
      events.push({
        kind: "open",
        timestampNs: next(),
        target: 1,
        pid,
        tid,
        fd,
        family: 4,
        localAddress: "127.0.0.1",
        localPort: 40000,
        peerAddress: "10.0.0.9",
        peerPort: 9090
      }),
    data: (
      fd: number,
      direction: "ingress" | "egress",
      text: string,
      opts: { tid?: number; total?: number } = {}
    ) => {
      const payload = Buffer.from(text, "latin1")
      events.push({
        kind: "data",
        timestampNs: next(),
        target: 1,
        pid,
        tid: opts.tid ?? pid,
        fd,
        direction,
        syscall: direction === "ingress" ? "read" : "write",
        totalLength: opts.total ?? payload.length,
        payload
      })
    },
    close: (fd: number) => events.push({ kind: "close", timestampNs: next(), target: 1, pid, tid: pid, fd }),
    /** The kernel's ids for the request of the next data event (same timestamp, as the capture writes them). */
    trace: (fd: number, role: "server" | "client", traceId: string, spanId: string, parentSpanId?: string) =>
      events.push({
        kind: "trace",
        timestampNs: t + 1_000_000n,
        target: 1,
        pid,
        tid: pid,
        fd,
        role,
        traceId,
        spanId,
        parentSpanId,
        flags: 1
      })
  }
}

const run = (events: ReadonlyArray<CaptureEvent>, logLevel: Telemetry.LogLevel = "info") => {
  const spans: Array<Telemetry.Span> = []
  const logs: Array<Telemetry.LogRecord> = []
  const processor = new EventProcessor(
    { identity: { service: "shop", pod: "shop-1" }, logLevel },
    { span: (s) => spans.push(s), log: (l) => logs.push(l) },
    base
  )
  processor.process(events)
  return { spans, logs, processor }
}

describe("EventProcessor", () => {
  it("gives spans the ids the kernel gave their requests (trace propagation)", () => {
    const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    const s = script()
    s.accept(7)
    s.trace(7, "server", trace, "00f067aa0ba902b7")
    s.data(7, "ingress", "GET /orders HTTP/1.1\r\nHost: a\r\n\r\n")
    s.connect(9)
    s.trace(9, "client", trace, "b9c7c989f97918e1", "00f067aa0ba902b7")
    s.data(9, "egress", "GET /stock HTTP/1.1\r\nHost: b\r\n\r\n")
    s.data(9, "ingress", F.okResponse("in stock"))
    s.data(7, "egress", F.okResponse("ordered"))
    // A server record that disagrees with the request's own traceparent is not used.
    s.trace(7, "server", trace, "1111111111111111")
    s.data(7, "ingress", F.getRequest)
    s.data(7, "egress", F.okResponse("hello"))
    const { spans, processor } = run(s.events)
    const server = spans.find((span) => span.kind === "server" && span.http?.path === "/orders")
    const client = spans.find((span) => span.kind === "client")
    expect(server).toMatchObject({ traceId: trace, spanId: "00f067aa0ba902b7", correlationId: trace })
    expect(server?.parentSpanId).toBeUndefined()
    expect(client).toMatchObject({
      traceId: trace,
      spanId: "b9c7c989f97918e1",
      parentSpanId: "00f067aa0ba902b7"
    })
    const other = spans.find((span) => span.kind === "server" && span.http?.path !== "/orders")
    expect(other).toMatchObject({
      traceId: "0af7651916cd43dd8448eb211c80319c",
      parentSpanId: "b7ad6b7169203331"
    })
    expect(other?.spanId).not.toBe("1111111111111111")
    expect(processor.stats.kernelIds).toEqual({ used: 2, unmatched: 1 })
  })

  it("turns an accepted connection's exchanges into server spans with the right fields", () => {
    const s = script()
    s.accept(7)
    s.data(7, "ingress", F.getRequest)
    s.data(7, "egress", F.okResponse("hello"))
    s.data(7, "ingress", F.postRequest("a=1"))
    s.data(7, "egress", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
    s.close(7)
    const { spans } = run(s.events)
    expect(spans).toHaveLength(2)
    const [get, post] = spans
    expect(get).toMatchObject({
      kind: "server",
      name: "GET /users/{id}",
      service: "shop",
      pod: "shop-1",
      traceId: "0af7651916cd43dd8448eb211c80319c",
      parentSpanId: "b7ad6b7169203331",
      correlationId: "order-42",
      http: { method: "GET", route: "/users/{id}", path: "/users/123?verbose=1", statusCode: 200 },
      peerAddress: "10.0.0.7",
      peerPort: 50000,
      error: false,
      startTimeUnixNano: base + 2_000_000n,
      durationNano: 1_000_000
    })
    expect(post).toMatchObject({ name: "POST /orders", error: true, http: { statusCode: 500 } })
    expect(post?.correlationId).toBe(post?.traceId)
    expect(post?.parentSpanId).toBeUndefined()
  })

  it("pairs pipelined requests with responses in order and reports unanswered ones at close", () => {
    const s = script()
    s.accept(8)
    s.data(8, "ingress", F.getRequest + F.headRequest + F.postRequest("xyz"))
    s.data(8, "egress", F.okResponse("one") + F.headResponse)
    s.close(8)
    const { spans } = run(s.events)
    expect(spans.map((span) => [span.name, span.http?.statusCode, span.attributes?.["iii.outcome"]])).toEqual(
      [
        ["GET /users/{id}", 200, undefined],
        ["HEAD /health", 200, undefined],
        ["POST /orders", undefined, "no_response"]
      ]
    )
  })

  it("links an outbound call made while the thread serves exactly one request", () => {
    const s = script()
    s.accept(7)
    s.data(7, "ingress", F.getRequest)
    s.connect(9)
    s.data(9, "egress", "GET /inventory/55 HTTP/1.1\r\nHost: inventory\r\n\r\n")
    s.data(9, "ingress", F.okResponse("[]"))
    s.data(7, "egress", F.okResponse("done"))
    const { spans } = run(s.events)
    const client = spans.find((span) => span.kind === "client")
    const server = spans.find((span) => span.kind === "server")
    expect(client).toMatchObject({
      name: "GET /inventory/{id}",
      traceId: server?.traceId,
      parentSpanId: server?.spanId,
      correlationId: "order-42",
      peerAddress: "10.0.0.9",
      peerPort: 9090,
      attributes: { "server.address": "inventory" }
    })
  })

  it("does not link outbound calls when the thread serves several requests", () => {
    const s = script()
    s.accept(7)
    s.accept(8, 50001)
    s.data(7, "ingress", F.getRequest)
    s.data(8, "ingress", F.headRequest)
    s.connect(9)
    s.data(9, "egress", "GET /x HTTP/1.1\r\n\r\n")
    s.data(9, "ingress", F.okResponse(""))
    const { spans } = run(s.events)
    const client = spans.find((span) => span.kind === "client")
    expect(client?.parentSpanId).toBeUndefined()
    expect(client?.traceId).not.toBe("0af7651916cd43dd8448eb211c80319c")
  })

  it("turns stdout/stderr lines into logs tied to the request being served, filtered by level", () => {
    const s = script()
    s.accept(7)
    s.data(7, "ingress", "GET /a HTTP/1.1\r\n\r\n")
    s.data(1, "egress", '{"level":30,"msg":"handling"}\n{"level":20,"msg":"noise"}\n')
    s.data(2, "egress", "[WARN] slow ")
    s.data(2, "egress", "disk\n")
    s.data(7, "egress", F.okResponse("ok"))
    s.data(1, "egress", "INFO after trace_id=0af7651916cd43dd8448eb211c80319c\n")
    s.data(1, "egress", "INFO unrelated\n")
    const { spans, logs, processor } = run(s.events)
    const server = spans[0]
    expect(logs.map((l) => [l.body, l.level, l.stream, l.traceId, l.correlationId])).toEqual([
      ['{"level":30,"msg":"handling"}', "info", "stdout", server?.traceId, server?.traceId],
      ["[WARN] slow disk", "warn", "stderr", server?.traceId, server?.traceId],
      [
        "INFO after trace_id=0af7651916cd43dd8448eb211c80319c",
        "info",
        "stdout",
        "0af7651916cd43dd8448eb211c80319c",
        "0af7651916cd43dd8448eb211c80319c"
      ],
      ["INFO unrelated", "info", "stdout", undefined, undefined]
    ])
    expect(logs[0]?.spanId).toBe(server?.spanId)
    expect(processor.stats.logsBelowLevel).toBe(1)
  })

  it("skips uncaptured bytes of large responses and stays in sync", () => {
    const s = script()
    s.accept(7)
    const big = F.okResponse("b".repeat(1_000_000))
    for (let i = 0; i < 3; i++) {
      s.data(7, "ingress", `GET /big/${i} HTTP/1.1\r\n\r\n`)
      s.data(7, "egress", big.slice(0, 4096), { total: big.length })
    }
    const { spans } = run(s.events)
    expect(spans.map((span) => [span.http?.path, span.http?.statusCode, span.attributes])).toEqual([
      ["/big/0", 200, undefined],
      ["/big/1", 200, undefined],
      ["/big/2", 200, undefined]
    ])
  })

  it("gives unknown protocols nothing but connection-level metrics", () => {
    const s = script()
    s.accept(7)
    s.data(7, "ingress", "*1\r\n$4\r\nPING\r\n")
    s.data(7, "egress", "+PONG\r\n", { total: 7 })
    s.close(7)
    const { spans, processor } = run(s.events)
    expect(spans).toHaveLength(0)
    const points = processor.flushMetrics(base + 10_000_000_000n)
    const byName = Object.fromEntries(points.map((p) => [p.name, p]))
    expect(byName["iii.tcp.connections"]).toMatchObject({
      value: 1,
      attributes: {
        "iii.protocol": "unknown",
        "network.peer.address": "10.0.0.7",
        "iii.connection.role": "server"
      }
    })
    expect(byName["iii.tcp.bytes_received"]?.value).toBe(14)
    expect(byName["iii.tcp.bytes_sent"]?.value).toBe(7)
  })

  it("aggregates RED metrics per route and status class", () => {
    const s = script()
    s.accept(7)
    for (let i = 0; i < 5; i++) {
      s.data(7, "ingress", `GET /users/${i} HTTP/1.1\r\n\r\n`)
      s.data(
        7,
        "egress",
        i === 4 ? "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n" : F.okResponse("x")
      )
    }
    const { processor } = run(s.events)
    const points = processor
      .flushMetrics(base + 10_000_000_000n)
      .filter((p) => p.name === "http.server.request.duration")
    expect(
      points.map((p) => [p.attributes?.["http.route"], p.attributes?.["iii.status_class"], p.value, p.kind])
    ).toEqual([
      ["/users/{id}", "2xx", 4, "distribution"],
      ["/users/{id}", "5xx", 1, "distribution"]
    ])
    expect(points[0]?.intervalNano).toBe(10_000_000_000)
    expect(processor.flushMetrics(base + 20_000_000_000n)).toEqual([])
  })

  it("picks up connections opened before tracing started from their first request", () => {
    const s = script()
    s.data(12, "egress", "GET /late HTTP/1.1\r\nHost: up\r\n\r\n")
    s.data(12, "ingress", F.okResponse("z"))
    const { spans } = run(s.events)
    expect(spans.map((span) => [span.kind, span.name])).toEqual([["client", "GET /late"]])
  })

  it("labels each target's telemetry with its own identity (a node agent: one per container)", () => {
    const events: Array<CaptureEvent> = []
    const identities: Record<number, { service: string; pod: string; container: string; node: string }> = {
      7: { service: "cart", pod: "cart-1", container: "app", node: "node-a" },
      9: { service: "auth", pod: "auth-1", container: "api", node: "node-a" }
    }
    let t = base
    for (const [target, pidOf] of [
      [7, 700],
      [9, 900]
    ] as const) {
      t += 1_000_000n
      const at = { timestampNs: t, target, pid: pidOf, tid: pidOf, fd: 5 }
      events.push({
        ...at,
        kind: "data",
        direction: "ingress",
        syscall: "read",
        totalLength: 16,
        payload: Buffer.from("GET /x HTTP/1.1\r\n\r\n")
      })
      events.push({
        ...at,
        kind: "data",
        direction: "egress",
        syscall: "write",
        totalLength: 38,
        payload: Buffer.from(F.okResponse("ok"))
      })
      events.push({
        ...at,
        kind: "data",
        direction: "egress",
        syscall: "write",
        totalLength: 6,
        fd: 1,
        payload: Buffer.from("hello\n")
      })
    }
    const spans: Array<Telemetry.Span> = []
    const logs: Array<Telemetry.LogRecord> = []
    const processor = new EventProcessor(
      { identity: { service: "default" }, identityOf: (target) => identities[target] },
      { span: (span) => spans.push(span), log: (log) => logs.push(log) },
      base
    )
    processor.process(events)
    const who = (item: {
      service: string
      pod?: string | undefined
      attributes?: Telemetry.Attributes | undefined
    }) => [
      item.service,
      item.pod,
      item.attributes?.["k8s.container.name"],
      item.attributes?.["k8s.node.name"]
    ]
    expect(spans.map(who)).toEqual([
      ["cart", "cart-1", "app", "node-a"],
      ["auth", "auth-1", "api", "node-a"]
    ])
    expect(logs.map(who)).toEqual(spans.map(who))
    const points = processor.flushMetrics(base + 10_000_000_000n)
    expect(new Set(points.map((point) => who(point).join(" ")))).toEqual(
      new Set(["cart cart-1 app node-a", "auth auth-1 api node-a"])
    )
    // A retired target is flushed one last time, then forgotten: its number may name another container.
    processor.retire(7)
    processor.flushMetrics(base + 20_000_000_000n)
    identities[7] = { service: "cart", pod: "cart-2", container: "app", node: "node-a" }
    processor.process(events.slice(0, 2).map((e, i) => ({ ...e, fd: 6, timestampNs: t + BigInt(i + 1) })))
    expect(spans.map(who).at(-1)).toEqual(["cart", "cart-2", "app", "node-a"])
    expect(processor.stats.logs).toBe(2)
  })
})
