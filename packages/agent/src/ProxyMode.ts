/**
 * Proxy mode, for hosts without eBPF: an HTTP/1.x reverse proxy in front of the app's port records the
 * same server spans and RED metrics eBPF mode would, and an optional forward proxy (the app's
 * `HTTP_PROXY`) records its outbound calls as client spans.
 *
 * Trace headers on the way to the app (W3C Trace Context):
 *   - a valid `traceparent` is continued: same trace id, the server span's id as the new parent id,
 *     the sampled flag kept; `tracestate` passes unchanged;
 *   - a missing, malformed or repeated `traceparent` is replaced by a new trace's, and `tracestate` is
 *     dropped (the spec's rule for an invalid parent); exactly one `traceparent` reaches the app;
 *   - `x-iii-correlation-id` is added (the trace id) when absent or invalid, and kept when valid.
 * The span starts when the request head has been read and ends when the last response byte was handed
 * to the client socket. Upstream failures answer 502 (a server-span error). WebSocket upgrades and
 * CONNECT tunnels are passed through without spans.
 */
import type * as http from "node:http"
import * as net from "node:net"
import type { Duplex } from "node:stream"
import * as Errors from "@iii/core/Errors"
import * as TraceContext from "@iii/core/TraceContext"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { ProxyError } from "./Errors.js"
import { nowUnixNano } from "./internal/Clock.js"
import type { Outcome, Role } from "./internal/ConnectionTracker.js"
import type { MessageHead } from "./internal/HttpParser.js"
import { Http } from "./internal/NodeHttp.js"
import type { Recorder } from "./internal/Recorder.js"
import { clientContext, type SpanContext, serverContext } from "./internal/Spans.js"

export interface HostPort {
  readonly host: string
  readonly port: number
}

/** `HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces) → HostPort. */
export const parseHostPort = (value: string): HostPort | undefined => {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim())
  if (match === null) return undefined
  const port = Number(match[3])
  if (port > 65535) return undefined
  return { host: match[1] ?? (match[2] === "" ? "0.0.0.0" : (match[2] ?? "")), port }
}

export interface ProxyOptions {
  /** Where the reverse proxy listens (clients connect here instead of the app). */
  readonly listen: HostPort
  /** The app. */
  readonly upstream: HostPort
  /** Also listen here as a forward proxy for the app's outbound calls (point its HTTP_PROXY at it). */
  readonly egress?: HostPort | undefined
}

export interface ProxyServer {
  readonly listening: HostPort
  readonly egressListening: HostPort | undefined
  /** Requests currently being served. */
  readonly inFlight: () => number
  /**
   * The context of the request being served, when exactly one is (to tie log lines to it); with none in
   * flight, the one that finished within the last `lingerMs` — a command's output reaches the agent
   * through a pipe and may arrive just after the response it was written for.
   */
  readonly servingOne: () => SpanContext | undefined
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded; nor are the trace headers we rewrite. */
const hopByHop = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade"
])

const headOf = (req: http.IncomingMessage, target: string): MessageHead => ({
  kind: "request",
  method: req.method ?? "GET",
  target,
  statusCode: 0,
  version: req.httpVersion,
  contentLength: -1,
  chunked: false,
  keepAlive: true,
  host: req.headers.host,
  traceparent: undefined,
  tracestate: undefined,
  correlationId: undefined,
  truncated: false
})

/** The headers to send on: hop-by-hop removed, trace headers replaced per the rules above. */
const forwardHeaders = (rawHeaders: ReadonlyArray<string>, context: SpanContext, keepTraceState: boolean) => {
  const connectionTokens = new Set<string>()
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.toLowerCase() === "connection") {
      for (const token of (rawHeaders[i + 1] ?? "").split(","))
        connectionTokens.add(token.trim().toLowerCase())
    }
  }
  const out: Array<string> = []
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? ""
    const value = rawHeaders[i + 1] ?? ""
    const lower = name.toLowerCase()
    if (hopByHop.has(lower) || connectionTokens.has(lower) || lower === TraceContext.traceparentHeader)
      continue
    if (lower === TraceContext.tracestateHeader && !keepTraceState) continue
    // Re-added below: the valid value it carried, or the trace id.
    if (lower === TraceContext.correlationIdHeader) continue
    out.push(name, value)
  }
  out.push(
    TraceContext.traceparentHeader,
    TraceContext.formatTraceParent({ traceId: context.traceId, spanId: context.spanId, flags: context.flags })
  )
  out.push(TraceContext.correlationIdHeader, context.correlationId)
  return out
}

const responseHeaders = (rawHeaders: ReadonlyArray<string>): Array<string> => {
  const out: Array<string> = []
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? ""
    const lower = name.toLowerCase()
    if (hopByHop.has(lower)) continue
    out.push(name, rawHeaders[i + 1] ?? "")
  }
  return out
}

const tunnel = (client: Duplex, upstream: net.Socket, head: Buffer | undefined) => {
  if (head !== undefined && head.length > 0) upstream.write(head)
  upstream.pipe(client)
  client.pipe(upstream)
  const end = () => {
    upstream.destroy()
    client.destroy()
  }
  upstream.on("error", end)
  client.on("error", end)
  upstream.on("close", end)
  client.on("close", end)
}

/** Starts the proxy; resolves once it listens. `close` stops accepting, lets requests under way finish, then ends what is left. */
export const start = async (
  options: ProxyOptions,
  recorder: Recorder
): Promise<ProxyServer & { readonly close: (graceMs: number) => Promise<void> }> => {
  const agent = new Http.Agent({ keepAlive: true, maxSockets: 512 })
  const serving = new Set<SpanContext>()
  /** Requests of either proxy being forwarded (not recorded yet). */
  let forwarding = 0
  /** The last request served alone, and when it finished. */
  let lastAlone: { context: SpanContext; at: number } | undefined
  const lingerMs = 100

  const handle = (role: Role) => (req: http.IncomingMessage, res: http.ServerResponse) => {
    const startNs = nowUnixNano()
    const rawTarget = req.url ?? "/"
    let host = options.upstream.host
    let port = options.upstream.port
    let path = rawTarget
    if (role === "client") {
      // The forward proxy gets absolute-form targets: `GET http://host:port/path HTTP/1.1`.
      let url: URL
      try {
        url = new URL(rawTarget)
      } catch {
        res.writeHead(400).end("absolute-form http:// URL expected\n")
        return
      }
      if (url.protocol !== "http:") {
        res.writeHead(400).end("only http:// URLs are proxied; use CONNECT for https\n")
        return
      }
      host = url.hostname.replace(/^\[|\]$/g, "")
      port = url.port === "" ? 80 : Number(url.port)
      path = `${url.pathname}${url.search}`
    }
    const headers = {
      traceparent: req.headersDistinct.traceparent,
      correlationId: req.headersDistinct["x-iii-correlation-id"]
    }
    const linked = role === "client" && serving.size === 1 ? serving.values().next().value : undefined
    const context = role === "server" ? serverContext(headers) : clientContext(headers, linked)
    const parentValid = TraceContext.parseTraceParent(headers.traceparent)._tag === "Some"
    if (role === "server") {
      lastAlone = undefined
      serving.add(context)
    }
    let statusCode: number | undefined
    let recorded = false
    forwarding++
    const record = (outcome: Outcome) => {
      if (recorded) return
      recorded = true
      forwarding--
      if (serving.delete(context) && serving.size === 0) lastAlone = { context, at: Date.now() }
      recorder.record({
        role,
        context,
        request: headOf(req, role === "client" ? path : rawTarget),
        statusCode,
        startNs,
        endNs: nowUnixNano(),
        outcome,
        peerAddress: role === "server" ? req.socket.remoteAddress : host,
        peerPort: role === "server" ? req.socket.remotePort : port
      })
    }
    const upstreamReq = Http.request({
      host,
      port,
      method: req.method,
      path,
      headers: forwardHeaders(req.rawHeaders, context, parentValid),
      agent,
      setHost: false
    })
    upstreamReq.on("response", (upstreamRes) => {
      statusCode = upstreamRes.statusCode
      res.writeHead(
        upstreamRes.statusCode ?? 502,
        upstreamRes.statusMessage,
        responseHeaders(upstreamRes.rawHeaders)
      )
      upstreamRes.pipe(res)
      upstreamRes.on("error", () => res.destroy())
    })
    upstreamReq.on("error", (error) => {
      if (!res.headersSent) {
        statusCode = 502
        res
          .writeHead(502, { "content-type": "text/plain" })
          .end(`upstream ${host}:${port}: ${error.message}\n`)
      } else {
        res.destroy()
      }
    })
    res.on("finish", () => record("complete"))
    res.on("close", () => {
      if (!res.writableFinished) {
        upstreamReq.destroy()
        record(res.headersSent ? "response_truncated" : "no_response")
      }
    })
    req.pipe(upstreamReq)
  }

  const passThroughUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const upstream = net.connect(options.upstream.port, options.upstream.host, () => {
      const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`]
      for (let i = 0; i < req.rawHeaders.length; i += 2)
        lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`)
      upstream.write(`${lines.join("\r\n")}\r\n\r\n`)
      tunnel(socket, upstream, head)
    })
    upstream.on("error", () => socket.destroy())
  }

  const connectTunnel = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const target = parseHostPort(req.url ?? "")
    if (target === undefined) {
      socket.end("HTTP/1.1 400 Bad Request\r\n\r\n")
      return
    }
    const upstream = net.connect(target.port, target.host, () => {
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n")
      tunnel(socket, upstream, head)
    })
    upstream.on("error", () => socket.end("HTTP/1.1 502 Bad Gateway\r\n\r\n"))
  }

  const listen = (server: http.Server, at: HostPort) =>
    new Promise<HostPort>((resolve, reject) => {
      server.once("error", reject)
      server.listen(at.port, at.host, () => {
        server.off("error", reject)
        const address = server.address()
        resolve(typeof address === "object" && address !== null ? { host: at.host, port: address.port } : at)
      })
    })

  const reverse = Http.createServer({ keepAliveTimeout: 65_000 }, handle("server"))
  reverse.on("upgrade", passThroughUpgrade)
  const listening = await listen(reverse, options.listen)
  let forward: http.Server | undefined
  let egressListening: HostPort | undefined
  if (options.egress !== undefined) {
    forward = Http.createServer(handle("client"))
    forward.on("connect", connectTunnel)
    try {
      egressListening = await listen(forward, options.egress)
    } catch (error) {
      reverse.close()
      throw error
    }
  }
  return {
    listening,
    egressListening,
    inFlight: () => serving.size,
    servingOne: () => {
      if (serving.size === 1) return serving.values().next().value
      if (serving.size === 0 && lastAlone !== undefined && Date.now() - lastAlone.at <= lingerMs)
        return lastAlone.context
      return undefined
    },
    close: async (graceMs: number) => {
      // Stop accepting and let the requests under way finish (a span each), then cut the rest: their
      // spans are recorded as the connections close, before this returns.
      const servers = forward === undefined ? [reverse] : [reverse, forward]
      const closed = Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))
      for (const server of servers) server.closeIdleConnections()
      const settled = async (ms: number) => {
        const deadline = Date.now() + ms
        while (forwarding > 0 && Date.now() < deadline)
          await new Promise((resolve) => setTimeout(resolve, 10))
      }
      await settled(graceMs)
      for (const server of servers) server.closeAllConnections()
      // Each cut request records its span when its connection's close is emitted.
      await settled(1000)
      await closed
      agent.destroy()
    }
  }
}

/**
 * The proxy as a scoped resource: listening until the scope closes, then finishing the requests under
 * way for up to `graceMs` (default 5 s) before cutting the rest.
 */
export const make = (
  options: ProxyOptions,
  recorder: Recorder,
  graceMs = 5000
): Effect.Effect<ProxyServer, ProxyError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => start(options, recorder),
      catch: (cause) =>
        new ProxyError({
          message: `cannot listen on ${options.listen.host}:${options.listen.port}${
            options.egress === undefined ? "" : ` / ${options.egress.host}:${options.egress.port}`
          }: ${Errors.messageOf(cause)}`
        })
    }),
    (server) => Effect.promise(() => server.close(graceMs))
  )
