/**
 * The node's port: node:http for the query API, health, metrics and OTLP/HTTP ingest (`POST
 * /v1/traces`, `/v1/logs`, `/v1/metrics`, under the same token), and `ws` (noServer) for the
 * `/v1/ingest` and `/v1/tail` upgrades, each an endpoint under the shared `SocketRules` (token on the
 * upgrade, connection cap, keep-alive); with TLS, a node:https server shares the same request and
 * upgrade handlers. Plain callbacks inside; `ObsNode` wraps start/stop in a scope.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https"
import type { Duplex } from "node:stream"
import { Effect, Either } from "effect"
import type { SpanReaderService, StoreMaintenanceService } from "../../Store.js"
import * as Dashboard from "./Dashboard.js"
import type { Endpoints, SocketRules } from "./Endpoints.js"
import type { BatchQueue } from "./GroupCommit.js"
import { errorAnswer, notFound, route } from "./HttpApi.js"
import { handleIngest, type IngestSettings } from "./IngestConnection.js"
import { type NodeCounters, renderPrometheus } from "./NodeCounters.js"
import { type ExportCounters, renderExportCounters } from "./OtlpExport.js"
import { handleOtlp, signalOf } from "./OtlpHttp.js"
import type { OtlpParts } from "./OtlpIngest.js"
import { parseTailFilter } from "./Params.js"
import { authorized, refuseUpgrade, SocketEndpoint } from "./SocketRules.js"
import type { TailHub } from "./TailHub.js"

export interface ServerParts {
  readonly settings: IngestSettings
  readonly rules: SocketRules
  /** Open ingest connections at most (more are answered 503). */
  readonly maxIngestConnections: number
  /** Tail subscribers at most (more are answered 503). */
  readonly maxTailSubscribers: number
  readonly reader: SpanReaderService
  readonly maintenance: StoreMaintenanceService
  readonly writer: BatchQueue
  readonly tail: TailHub
  readonly counters: NodeCounters
  /** The OTLP exporter's, when it is on. */
  readonly exportCounters?: ExportCounters | undefined
  readonly isReady: () => boolean
  /** The built dashboard's directory (default: the package's `dist/dashboard`). */
  readonly dashboardDir?: string | undefined
  /** Why the store can no longer keep what it acknowledges, once that happened. */
  readonly storeFailure: () => string | undefined
  /** The node's wall clock, unix milliseconds (injectable: tests jump it). */
  readonly nowMs: () => number
  /** Logs an error through the node's logger (every 5xx answered, with its cause). */
  readonly logError: (message: string) => void
  readonly endpoints: Endpoints | undefined
}

/** Paths answered without a token: probes, the node's own metrics, and the External Metrics API (the
 * Kubernetes aggregator authenticates with its front-proxy certificate, not a bearer token). */
const openPath = (path: string) =>
  path === "/healthz" || path === "/readyz" || path === "/metrics" || path.startsWith("/apis/")

/** The request as a log line names it (the path cut short: it is the client's to make long). */
const described = (req: IncomingMessage) => `${req.method} ${(req.url ?? "/").slice(0, 200)}`

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

export interface NodeServers {
  readonly http: Server
  /**
   * A server over TLS with the same request and upgrade handlers. With a client CA it asks every
   * client for a certificate but admits those without one (agents, browsers, the aggregator):
   * whether a certificate verified is for `/v1/peer` to judge (`peerCertificateVerified`).
   */
  readonly createTlsServer: (credentials: {
    readonly cert: Buffer
    readonly key: Buffer
    readonly clientCa: Buffer | undefined
  }) => HttpsServer
  /** Closes every WebSocket (1001) of every server; the servers themselves are closed by the caller. */
  readonly closeSockets: () => void
  /** What OTLP ingest needs, for the OTLP/gRPC listener beside these servers. */
  readonly otlp: OtlpParts
}

export const createNodeServers = (parts: ServerParts): NodeServers => {
  const ingest = new SocketEndpoint({
    name: "ingest",
    closeReasons: ["hello_timeout", "ping_timeout"],
    maxConnections: parts.maxIngestConnections,
    // Frames over the limit get an `oversize` error frame from the decoder; far larger ones are cut by ws.
    maxPayload: parts.settings.maxFrameBytes * 2,
    rules: parts.rules,
    counters: parts.counters
  })
  const tail = new SocketEndpoint({
    name: "tail",
    closeReasons: ["ping_timeout", "stalled"],
    maxConnections: parts.maxTailSubscribers,
    maxPayload: 64 * 1024,
    rules: parts.rules,
    counters: parts.counters
  })
  const dashboardDir = parts.dashboardDir ?? Dashboard.builtDirectory()
  const otlp: OtlpParts = {
    maxBodyBytes: parts.settings.maxFrameBytes,
    misfit: parts.settings.misfit,
    writer: parts.writer,
    storeFailure: parts.storeFailure,
    nowMs: parts.nowMs,
    logError: parts.logError,
    counters: parts.counters,
    token: parts.rules.token
  }

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://node")
    const signal = req.method === "POST" ? signalOf(url.pathname) : undefined
    if (signal !== undefined) {
      if (authorized(parts.rules.token, req)) return handleOtlp(req, res, signal, otlp)
      parts.counters.otlpAnswered(signal, 401)
      return reply(res, 401, "application/json", JSON.stringify({ error: "missing or wrong bearer token" }), {
        "www-authenticate": "Bearer",
        connection: "close"
      })
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      const other = authorized(parts.rules.token, req)
        ? parts.endpoints?.answer(req.method ?? "", url, req)
        : undefined
      if (other !== undefined) {
        const answer = await other
        return reply(res, answer.status, answer.contentType, answer.body, answer.headers)
      }
      return reply(res, 405, "application/json", JSON.stringify({ error: "only GET is supported" }), {
        allow: "GET"
      })
    }
    if (url.pathname === "/healthz") return reply(res, 200, "text/plain", "ok\n")
    if (url.pathname === "/readyz") {
      const failure = parts.storeFailure()
      return parts.isReady()
        ? reply(res, 200, "text/plain", "ready\n")
        : reply(res, 503, "text/plain", failure === undefined ? "not ready\n" : `not ready: ${failure}\n`)
    }
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
            spansInStore: s.spans,
            storeFailed: parts.storeFailure() !== undefined
          }) +
          (parts.exportCounters === undefined ? "" : renderExportCounters(parts.exportCounters))
      )
    }
    if (Dashboard.isDashboardPath(url.pathname)) {
      const file = Dashboard.serve(dashboardDir, url.pathname)
      res.writeHead(file.status, { ...file.headers, "content-length": file.body.length })
      return res.end(req.method === "HEAD" ? undefined : file.body)
    }
    if (!openPath(url.pathname) && !authorized(parts.rules.token, req))
      return reply(res, 401, "application/json", JSON.stringify({ error: "missing or wrong bearer token" }), {
        "www-authenticate": "Bearer"
      })
    const effect = route(parts.reader, url, parts.nowMs())
    const other = effect === undefined ? parts.endpoints?.answer(req.method ?? "GET", url, req) : undefined
    const answer =
      effect !== undefined
        ? await Effect.runPromise(
            Effect.catchAll(effect, (e) =>
              Effect.sync(() => {
                const answer = errorAnswer(e)
                if (answer.status >= 500)
                  parts.logError(`${described(req)} answered ${answer.status}: ${e.message}`)
                return answer
              })
            )
          )
        : other !== undefined
          ? await other
          : notFound(`path ${url.pathname}`)
    reply(res, answer.status, answer.contentType, answer.body, answer.headers)
  }

  const request = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((e: unknown) => {
      parts.logError(
        `${described(req)} answered 500: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`
      )
      if (!res.headersSent) reply(res, 500, "application/json", JSON.stringify({ error: "internal error" }))
      else res.destroy()
    })
  }

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? "/", "http://node")
    if (url.pathname === "/v1/ingest") {
      if (ingest.admit(req, socket))
        ingest.complete(req, socket, head, (ws) =>
          handleIngest(ws, parts.settings, parts.writer, parts.counters, (reason) => ingest.closed(reason))
        )
      return
    }
    if (url.pathname === "/v1/tail") {
      if (!tail.admit(req, socket)) return
      const filter = parseTailFilter(url.searchParams)
      if (Either.isLeft(filter))
        return refuseUpgrade(socket, 400, "Bad Request", {
          error: filter.left.message,
          parameter: filter.left.parameter
        })
      tail.complete(req, socket, head, (ws) => {
        const unsubscribe = parts.tail.subscribe(filter.right, {
          send: (data, binary) => ws.send(data, { binary }),
          bufferedAmount: () => ws.bufferedAmount,
          // A close frame could not get past the full buffer: drop the connection.
          close: () => {
            tail.closed("stalled")
            ws.terminate()
          }
        })
        ws.on("close", unsubscribe)
        ws.on("error", () => ws.terminate())
        // Subscribers only listen; anything they send is ignored.
        ws.on("message", () => undefined)
      })
      return
    }
    if (parts.endpoints?.upgrade(req, socket, head)) return
    refuseUpgrade(socket, 404, "Not Found", { error: `no WebSocket endpoint at ${url.pathname}` })
  }

  const withHandlers = <S extends Server | HttpsServer>(server: S): S => {
    server.keepAliveTimeout = 65_000
    server.on("upgrade", upgrade)
    return server
  }

  const closeSockets = () => {
    ingest.close("node shutting down")
    tail.close("node shutting down")
  }
  return {
    http: withHandlers(createServer(request)),
    createTlsServer: ({ cert, key, clientCa }) =>
      withHandlers(
        createHttpsServer(
          {
            cert,
            key,
            ...(clientCa !== undefined && { ca: clientCa, requestCert: true, rejectUnauthorized: false })
          },
          request
        )
      ),
    closeSockets,
    otlp
  }
}
