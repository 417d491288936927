/**
 * The node's port: node:http for the query API, health and metrics, and `ws` (noServer) for the
 * `/v1/ingest` and `/v1/tail` upgrades; with TLS, a node:https server shares the same request and
 * upgrade handlers. Plain callbacks inside; `ObsNode` wraps start/stop in a scope.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https"
import type { Duplex } from "node:stream"
import { Effect, Either } from "effect"
import { WebSocketServer } from "ws"
import type { SpanReaderService, StoreMaintenanceService } from "../../Store.js"
import * as Dashboard from "./Dashboard.js"
import type { Endpoints } from "./Endpoints.js"
import type { BatchQueue } from "./GroupCommit.js"
import { errorAnswer, notFound, route } from "./HttpApi.js"
import { handleIngest, type IngestSettings, tokensEqual } from "./IngestConnection.js"
import { type NodeCounters, renderPrometheus } from "./NodeCounters.js"
import { parseTailFilter } from "./Params.js"
import type { TailHub } from "./TailHub.js"

export interface ServerParts {
  readonly settings: IngestSettings
  readonly reader: SpanReaderService
  readonly maintenance: StoreMaintenanceService
  readonly writer: BatchQueue
  readonly tail: TailHub
  readonly counters: NodeCounters
  readonly isReady: () => boolean
  /** The built dashboard's directory (default: the package's `dist/dashboard`). */
  readonly dashboardDir?: string | undefined
  readonly endpoints: Endpoints | undefined
}

/** Paths answered without a token: probes, the node's own metrics, and the External Metrics API (the
 * Kubernetes aggregator authenticates with its front-proxy certificate, not a bearer token). */
const openPath = (path: string) =>
  path === "/healthz" || path === "/readyz" || path === "/metrics" || path.startsWith("/apis/")

const bearer = (req: IncomingMessage): string | undefined => {
  const h = req.headers.authorization
  return h?.startsWith("Bearer ") ? h.slice(7).trim() : undefined
}

const authorized = (parts: ServerParts, req: IncomingMessage) =>
  parts.settings.token === undefined || tokensEqual(parts.settings.token, bearer(req))

const reply = (
  res: ServerResponse,
  status: number,
  contentType: string,
  body: string,
  extra: Readonly<Record<string, string>> = {}
) => {
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body), ...extra })
  res.end(body)
}

const rejectUpgrade = (socket: Duplex, status: number, reason: string, body: string) => {
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  )
}

export interface NodeServers {
  readonly http: Server
  /** A server over TLS with the same request and upgrade handlers. */
  readonly createTlsServer: (credentials: { readonly cert: Buffer; readonly key: Buffer }) => HttpsServer
  /** Closes every WebSocket (1001) of every server; the servers themselves are closed by the caller. */
  readonly closeSockets: () => void
}

export const createNodeServers = (parts: ServerParts): NodeServers => {
  const ingestWss = new WebSocketServer({
    noServer: true,
    // Frames over the limit get an `oversize` error frame from the decoder; far larger ones are cut by ws.
    maxPayload: parts.settings.maxFrameBytes * 2,
    perMessageDeflate: false
  })
  const tailWss = new WebSocketServer({
    noServer: true,
    maxPayload: 64 * 1024,
    perMessageDeflate: false,
    handleProtocols: Dashboard.chooseProtocol
  })
  const dashboardDir = parts.dashboardDir ?? Dashboard.builtDirectory()

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://node")
    if (req.method !== "GET" && req.method !== "HEAD") {
      const other = authorized(parts, req) ? parts.endpoints?.answer(req.method ?? "", url, req) : undefined
      if (other !== undefined) {
        const answer = await other
        return reply(res, answer.status, answer.contentType, answer.body, answer.headers)
      }
      return reply(res, 405, "application/json", JSON.stringify({ error: "only GET is supported" }), {
        allow: "GET"
      })
    }
    if (url.pathname === "/healthz") return reply(res, 200, "text/plain", "ok\n")
    if (url.pathname === "/readyz")
      return parts.isReady()
        ? reply(res, 200, "text/plain", "ready\n")
        : reply(res, 503, "text/plain", "not ready\n")
    if (url.pathname === "/metrics") {
      const stats = await Effect.runPromise(Effect.either(parts.maintenance.stats()))
      const s = Either.getOrElse(stats, () => ({ bytes: 0, spans: 0 }))
      const more = (await parts.endpoints?.metrics()) ?? ""
      return reply(
        res,
        200,
        "text/plain; version=0.0.4",
        more +
          renderPrometheus(parts.counters, {
            queueDepth: parts.writer.depth,
            commits: parts.writer.commits,
            tailSubscribers: parts.tail.size,
            tailDelivered: parts.tail.deliveredTotal,
            tailDropped: parts.tail.droppedTotal,
            bytesStored: s.bytes,
            spansInStore: s.spans
          })
      )
    }
    if (Dashboard.isDashboardPath(url.pathname)) {
      const file = Dashboard.serve(dashboardDir, url.pathname)
      res.writeHead(file.status, { ...file.headers, "content-length": file.body.length })
      return res.end(req.method === "HEAD" ? undefined : file.body)
    }
    if (!openPath(url.pathname) && !authorized(parts, req))
      return reply(res, 401, "application/json", JSON.stringify({ error: "missing or wrong bearer token" }), {
        "www-authenticate": "Bearer"
      })
    const effect = route(parts.reader, url)
    const other = effect === undefined ? parts.endpoints?.answer(req.method ?? "GET", url, req) : undefined
    const answer =
      effect !== undefined
        ? await Effect.runPromise(Effect.catchAll(effect, (e) => Effect.succeed(errorAnswer(e))))
        : other !== undefined
          ? await other
          : notFound(`path ${url.pathname}`)
    reply(res, answer.status, answer.contentType, answer.body, answer.headers)
  }

  const request = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) reply(res, 500, "application/json", JSON.stringify({ error: "internal error" }))
      else res.destroy()
    })
  }

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? "/", "http://node")
    if (url.pathname === "/v1/ingest") {
      // Agents may authenticate with the header here or with the token in their hello frame.
      const preAuthorized = parts.settings.token !== undefined && authorized(parts, req)
      ingestWss.handleUpgrade(req, socket, head, (ws) =>
        handleIngest(ws, parts.settings, parts.writer, parts.counters, preAuthorized)
      )
      return
    }
    if (url.pathname === "/v1/tail") {
      const browserToken = Dashboard.protocolToken(req)
      if (
        !authorized(parts, req) &&
        !(parts.settings.token !== undefined && tokensEqual(parts.settings.token, browserToken))
      )
        return rejectUpgrade(
          socket,
          401,
          "Unauthorized",
          JSON.stringify({ error: "missing or wrong bearer token" })
        )
      const filter = parseTailFilter(url.searchParams)
      if (Either.isLeft(filter))
        return rejectUpgrade(
          socket,
          400,
          "Bad Request",
          JSON.stringify({ error: filter.left.message, parameter: filter.left.parameter })
        )
      tailWss.handleUpgrade(req, socket, head, (ws) => {
        const unsubscribe = parts.tail.subscribe(filter.right, {
          send: (data, binary) => ws.send(data, { binary }),
          bufferedAmount: () => ws.bufferedAmount
        })
        ws.on("close", unsubscribe)
        ws.on("error", () => ws.terminate())
        // Subscribers only listen; anything they send is ignored.
        ws.on("message", () => undefined)
      })
      return
    }
    if (parts.endpoints?.upgrade(req, socket, head)) return
    rejectUpgrade(
      socket,
      404,
      "Not Found",
      JSON.stringify({ error: `no WebSocket endpoint at ${url.pathname}` })
    )
  }

  const withHandlers = <S extends Server | HttpsServer>(server: S): S => {
    server.keepAliveTimeout = 65_000
    server.on("upgrade", upgrade)
    return server
  }

  const closeSockets = () => {
    for (const ws of ingestWss.clients) ws.close(1001, "node shutting down")
    for (const ws of tailWss.clients) ws.close(1001, "node shutting down")
    ingestWss.close()
    tailWss.close()
  }
  return {
    http: withHandlers(createServer(request)),
    createTlsServer: ({ cert, key }) => withHandlers(createHttpsServer({ cert, key }, request)),
    closeSockets
  }
}
