/**
 * End to end: a real Node.js HTTP server started under the agent (TracedCommand), real requests of
 * every kind, telemetry streamed over a real WebSocket to a fake obs. The same suite runs in eBPF mode
 * (root with the addon built; skipped with the reason otherwise) and in proxy mode (no privileges).
 */
import * as http from "node:http"
import * as net from "node:net"
import { fileURLToPath } from "node:url"
import type { Telemetry } from "@iii/core"
import { Effect, Exit, Layer, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Agent from "../../src/Agent.js"
import * as EbpfCapture from "../../src/EbpfCapture.js"
import * as Exporter from "../../src/Exporter.js"
import { HttpParser } from "../../src/internal/HttpParser.js"
import * as TracedCommand from "../../src/TracedCommand.js"
import { FakeObs, freePort, until } from "../support/FakeObs.js"

const app = fileURLToPath(new URL("../fixtures/e2e-app.mjs", import.meta.url))
const availability = await Effect.runPromise(EbpfCapture.isAvailable)
if (!availability.available) {
  console.warn(`eBPF end-to-end tests skipped: ${availability.reasons.join("; ")}`)
}

interface Sent {
  readonly method: string
  readonly path: string
  readonly route: string
  readonly status: number
  /** Client-measured duration, from before the request was written to the end of the response. */
  readonly clientNs: number | undefined
  readonly tag: string
}

/** Sends one request on `agent`; measures it as the client sees it. */
const send = (
  port: number,
  method: string,
  path: string,
  options: { agent?: http.Agent | false; headers?: Record<string, string>; body?: string } = {}
) =>
  new Promise<{ status: number; ns: number; bytes: number }>((resolve, reject) => {
    const started = process.hrtime.bigint()
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        agent: options.agent ?? false,
        headers: options.headers ?? {}
      },
      (res) => {
        let bytes = 0
        res.on("data", (chunk: Buffer) => {
          bytes += chunk.length
        })
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, ns: Number(process.hrtime.bigint() - started), bytes })
        )
      }
    )
    req.on("error", reject)
    req.end(options.body)
  })

/** Writes several requests in one write on one connection and waits for all responses. */
const pipelined = (port: number, paths: ReadonlyArray<string>) =>
  new Promise<number>((resolve, reject) => {
    let responses = 0
    const parser = new HttpParser("response", {
      onHead: () => false,
      onEnd: () => {
        responses++
        if (responses === paths.length) socket.end()
      },
      onNotHttp: () => reject(new Error("not HTTP")),
      onHidden: () => reject(new Error("a response went unseen"))
    })
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write(paths.map((path) => `GET ${path} HTTP/1.1\r\nHost: app\r\n\r\n`).join(""))
    })
    socket.on("data", (chunk) => parser.push(chunk, 0, 0n))
    socket.on("close", () => resolve(responses))
    socket.on("error", reject)
  })

const openPort = async (port: number) => {
  for (let i = 0; i < 2000; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const probe = net.connect(port, "127.0.0.1")
      probe.on("connect", () => {
        probe.destroy()
        resolve(true)
      })
      probe.on("error", () => resolve(false))
    })
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error(`nothing listens on ${port}`)
}

const suite = (mode: Agent.Mode) => {
  const obs = new FakeObs()
  let downstream: http.Server
  let scope: Scope.CloseableScope
  let target: number
  const sent: Array<Sent> = []
  let serverSpans: Array<Telemetry.Span> = []

  beforeAll(async () => {
    const obsUrl = await obs.start()
    downstream = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ path: req.url }))
    })
    await new Promise<void>((resolve) => downstream.listen(0, "127.0.0.1", resolve))
    const downstreamPort = (downstream.address() as net.AddressInfo).port
    const appPort = await freePort()
    const layer = Agent.layer({
      identity: { service: "e2e-app", pod: "test-pod" },
      mode,
      proxy:
        mode === "proxy"
          ? {
              listen: { host: "127.0.0.1", port: 0 },
              upstream: { host: "127.0.0.1", port: appPort },
              egress: { host: "127.0.0.1", port: 0 }
            }
          : undefined,
      metricsIntervalMs: 200,
      // As `iii agent -- COMMAND` runs it: the command's output through socketpairs, no syscall hooks.
      ...(mode === "ebpf" ? { capture: { stdio: "sockets" as const } } : {})
    }).pipe(
      Layer.provide(
        Exporter.layer({
          urls: [obsUrl],
          agent: { id: Exporter.newAgentId(), service: "e2e-app" },
          flushIntervalMs: 50
        })
      )
    )
    scope = Effect.runSync(Scope.make())
    const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
    const agent = Effect.runSync(Effect.provide(Agent.Agent, context))
    await Effect.runPromise(
      TracedCommand.start([process.execPath, app], {
        env: { ...process.env, PORT: String(appPort), DOWNSTREAM: `127.0.0.1:${downstreamPort}` },
        echoOutput: false
      }).pipe(Effect.provide(context), Scope.extend(scope))
    )
    await openPort(appPort)
    target = mode === "proxy" ? (agent.proxy?.listening.port ?? 0) : appPort

    const record = async (
      method: string,
      path: string,
      route: string,
      tag: string,
      options: Parameters<typeof send>[3] = {}
    ) => {
      const result = await send(target, method, path, options)
      sent.push({ method, path, route, status: result.status, clientNs: result.ns, tag })
      return result
    }
    // keep-alive, sequential
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 })
    for (let i = 1; i <= 5; i++)
      await record("GET", `/users/${i}`, "/users/{id}", "keepalive", { agent: keepAlive })
    await record("POST", "/orders", "/orders", "post", { agent: keepAlive, body: "x=1" })
    await record("POST", "/orders", "/orders", "post", {
      agent: keepAlive,
      body: "y".repeat(100_000),
      headers: { "transfer-encoding": "chunked" }
    })
    await record("GET", "/chunked", "/chunked", "chunked", { agent: keepAlive })
    const large = await record("GET", "/large?bytes=1000000", "/large", "large", { agent: keepAlive })
    expect(large.bytes).toBe(1_000_000)
    await record("GET", "/large?bytes=200000", "/large", "large", { agent: keepAlive })
    await record("HEAD", "/users/9", "/users/{id}", "head", { agent: keepAlive })
    await record("GET", "/empty", "/empty", "empty", { agent: keepAlive })
    await record("GET", "/error", "/error", "error", { agent: keepAlive })
    await record("GET", "/users/42", "/users/{id}", "traceparent", {
      agent: keepAlive,
      headers: {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "x-iii-correlation-id": "checkout-1"
      }
    })
    // A head larger than the capture (4 KiB): the span still comes, and the connection resyncs.
    await record("GET", "/users/77", "/users/{id}", "big-head", {
      agent: keepAlive,
      headers: { cookie: `session=${"c".repeat(10_000)}` }
    })
    await record("GET", "/call?id=7", "/call", "call", { agent: keepAlive })
    await record("GET", "/call?id=8", "/call", "call", { agent: keepAlive })
    keepAlive.destroy()
    // pipelined
    const paths = ["/users/100", "/users/101", "/users/102"]
    expect(await pipelined(target, paths)).toBe(3)
    for (const path of paths) {
      sent.push({
        method: "GET",
        path,
        route: "/users/{id}",
        status: 200,
        clientNs: undefined,
        tag: "pipelined"
      })
    }
    // concurrent connections
    const concurrent = await Promise.all(
      Array.from({ length: 10 }, (_, i) => send(target, "GET", `/users/${200 + i}`))
    )
    for (const [i, result] of concurrent.entries()) {
      sent.push({
        method: "GET",
        path: `/users/${200 + i}`,
        route: "/users/{id}",
        status: result.status,
        clientNs: result.ns,
        tag: "concurrent"
      })
    }
    await until(
      `${sent.length} server spans`,
      () => obs.spans.filter((span) => span.kind === "server").length >= sent.length,
      20_000
    )
    // Let anything late (a wrongly duplicated span) arrive before counting.
    await new Promise((resolve) => setTimeout(resolve, 500))
    serverSpans = obs.spans.filter((span) => span.kind === "server")
  }, 120_000)

  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    await obs.stop()
    await new Promise<void>((resolve) => downstream?.close(() => resolve()))
  })

  it("produces exactly one server span per request, with method, route and status", () => {
    const key = (method: string, route: string, status: number | undefined) => `${method} ${route} ${status}`
    expect(
      serverSpans
        .map((span) => key(span.http?.method ?? "", span.http?.route ?? "", span.http?.statusCode))
        .sort()
    ).toEqual(sent.map((request) => key(request.method, request.route, request.status)).sort())
    expect(serverSpans.every((span) => span.service === "e2e-app" && span.pod === "test-pod")).toBe(true)
    expect(new Set(serverSpans.map((span) => span.spanId)).size).toBe(serverSpans.length)
  })

  it("has durations within what the client measured", () => {
    for (const request of sent) {
      if (request.clientNs === undefined || request.tag === "concurrent") continue
      const span = serverSpans.find((s) => s.http?.path === request.path && s.http?.method === request.method)
      expect(span, request.path).toBeDefined()
      expect(span?.durationNano).toBeGreaterThan(0)
      // Within the client's own measure, but for when each end is stamped. eBPF: the kernel stamps the
      // response after the send returns, by which time the client may have read it (the server
      // preempted in between); both ends are on one clock (one offset for every batch). Proxy: the
      // proxy reads its clock when its event loop gets to the bytes, on a loaded machine milliseconds
      // after the client had them (3.5 ms seen at load 14).
      const slackNs = mode === "ebpf" ? 1_000_000 : 25_000_000
      expect(span?.durationNano, request.path).toBeLessThanOrEqual(request.clientNs + slackNs)
    }
    // Large responses take measurably longer than an empty one.
    const large = serverSpans.find((s) => s.http?.path === "/large?bytes=1000000")
    expect(large?.error).toBe(false)
  })

  it("honours traceparent and x-iii-correlation-id, and marks 5xx as errors", () => {
    const traced = serverSpans.find((s) => s.http?.path === "/users/42")
    expect(traced).toMatchObject({
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      parentSpanId: "00f067aa0ba902b7",
      correlationId: "checkout-1"
    })
    const failed = serverSpans.find((s) => s.http?.path === "/error")
    expect(failed?.error).toBe(true)
    const fresh = serverSpans.find((s) => s.http?.path === "/users/1")
    expect(fresh?.correlationId).toBe(fresh?.traceId)
    expect(fresh?.parentSpanId).toBeUndefined()
  })

  it("records the server's outbound calls as client spans linked to the request they served", () => {
    const clients = obs.spans.filter((span) => span.kind === "client")
    expect(clients.map((span) => [span.http?.method, span.http?.route, span.http?.statusCode])).toEqual([
      ["GET", "/inventory/{id}", 200],
      ["GET", "/inventory/{id}", 200]
    ])
    for (const client of clients) {
      const id = client.http?.path?.split("/").pop()
      const server = serverSpans.find((s) => s.http?.path === `/call?id=${id}`)
      expect(client.traceId).toBe(server?.traceId)
      expect(client.parentSpanId).toBe(server?.spanId)
      expect(client.startTimeUnixNano).toBeGreaterThanOrEqual(server?.startTimeUnixNano ?? 0n)
    }
  })

  it("captures the app's log lines, with levels, tied to the request being served", async () => {
    await until("log lines", () => obs.logs.some((log) => log.body.includes("something broke")), 10_000)
    const userLog = obs.logs.find((log) => log.body.includes('"user 3"'))
    const userSpan = serverSpans.find((s) => s.http?.path === "/users/3")
    expect(userLog).toMatchObject({
      level: "info",
      stream: "stdout",
      traceId: userSpan?.traceId,
      service: "e2e-app"
    })
    const errorLog = obs.logs.find((log) => log.body.includes("something broke"))
    const errorSpan = serverSpans.find((s) => s.http?.path === "/error")
    expect(errorLog).toMatchObject({ level: "error", stream: "stderr", traceId: errorSpan?.traceId })
  })

  it("flushes RED metrics per route and status class", async () => {
    await until(
      "RED metrics",
      () =>
        obs.metrics.some(
          (p) => p.name === "http.server.request.duration" && p.attributes?.["http.route"] === "/error"
        ),
      10_000
    )
    const users = obs.metrics
      .filter(
        (p) => p.name === "http.server.request.duration" && p.attributes?.["http.route"] === "/users/{id}"
      )
      .reduce((sum, p) => sum + p.value, 0)
    expect(users).toBe(sent.filter((request) => request.route === "/users/{id}").length)
    const errors = obs.metrics.filter(
      (p) => p.name === "http.server.request.duration" && p.attributes?.["iii.status_class"] === "5xx"
    )
    expect(errors.reduce((sum, p) => sum + p.value, 0)).toBe(1)
  })
}

describe.skipIf(!availability.available)("agent end to end, eBPF mode", () => suite("ebpf"))
describe("agent end to end, proxy mode", () => suite("proxy"))
