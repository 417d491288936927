/**
 * The rules every WebSocket on the node's port obeys, in one place (ingest, tail, and any endpoint
 * added later, such as node-to-node links):
 *
 * - **Token on the upgrade.** With a token configured, an upgrade without it is answered `401` before
 *   any WebSocket exists: `Authorization: Bearer TOKEN` (the scheme in any case, RFC 7235), or, for
 *   browsers, which cannot set headers on a WebSocket, the subprotocol `iii.bearer.<TOKEN as
 *   base64url>` offered beside a real one (the dashboard offers `iii.tail`), which is what the node
 *   then selects, as the Kubernetes API server does: the token stays out of URLs and access logs.
 * - **A cap per endpoint.** Past `maxConnections` open sockets an upgrade is answered `503`.
 * - **Keep-alive.** Every `pingInterval` the node pings each socket; one from which nothing (pong or
 *   data) arrived during a whole interval is terminated. Sockets the node itself paused
 *   (back-pressure) are not judged.
 * - **A hello deadline** for endpoints whose protocol opens with a hello (`helloDeadline`).
 *
 * Refusals and closes are counted in `NodeCounters` by endpoint and reason.
 */
import { timingSafeEqual } from "node:crypto"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import { TLSSocket } from "node:tls"
import { type WebSocket, WebSocketServer } from "ws"
import type { SocketRules } from "./Endpoints.js"
import type { NodeCounters } from "./NodeCounters.js"

/** Compares in constant time (for equal lengths). */
export const tokensEqual = (expected: string, given: string | undefined): boolean => {
  if (given === undefined) return false
  const a = Buffer.from(expected)
  const b = Buffer.from(given)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** Prefix of the subprotocol carrying the token for clients that cannot set headers (browsers). */
export const bearerProtocolPrefix = "iii.bearer."

const protocolsOf = (req: IncomingMessage): ReadonlyArray<string> =>
  (req.headers["sec-websocket-protocol"] ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p.length > 0)

/** The bearer token of a request: its Authorization header (any case of `Bearer`), else its bearer subprotocol. */
export const bearerToken = (req: IncomingMessage): string | undefined => {
  const header = /^bearer[ \t]+(.+)$/i.exec(req.headers.authorization ?? "")?.[1]?.trim()
  if (header !== undefined) return header
  const offered = protocolsOf(req).find((p) => p.startsWith(bearerProtocolPrefix))
  return offered === undefined
    ? undefined
    : Buffer.from(offered.slice(bearerProtocolPrefix.length), "base64url").toString("utf8")
}

/** Whether the request carries the token (always, when the node has none). */
export const authorized = (token: string | undefined, req: IncomingMessage): boolean =>
  token === undefined || tokensEqual(token, bearerToken(req))

/**
 * Whether the request came over TLS with a client certificate the listener's client CA signed (the
 * listener asks for one only when a client CA is configured, and verifies it against that CA alone).
 */
export const peerCertificateVerified = (req: IncomingMessage): boolean =>
  req.socket instanceof TLSSocket && req.socket.authorized

/** ws's subprotocol choice: the first offered one that is not the token (never echoed back). */
const selectProtocol = (protocols: Set<string>): string | false => {
  for (const p of protocols) if (!p.startsWith(bearerProtocolPrefix)) return p
  return false
}

/** Answers an upgrade with a plain HTTP response and closes the socket: no WebSocket is made. */
export const refuseUpgrade = (
  socket: Duplex,
  status: number,
  reason: string,
  body: unknown,
  headers: Readonly<Record<string, string>> = {}
): void => {
  const text = JSON.stringify(body)
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("")
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${extra}Connection: close\r\n\r\n${text}`
  )
}

/** Closes with a close frame, and drops the TCP connection if the peer does not answer it within 2 s. */
export const closeFirmly = (ws: WebSocket, code: number, reason: string): void => {
  ws.close(code, reason)
  setTimeout(() => {
    if (ws.readyState !== ws.CLOSED) ws.terminate()
  }, 2_000).unref()
}

/**
 * Runs `expired` unless the returned function (call it on hello) is called within `ms`; the deadline
 * is dropped when the socket closes.
 */
export const helloDeadline = (ws: WebSocket, ms: number, expired: () => void): (() => void) => {
  const timer = setTimeout(expired, ms)
  timer.unref()
  const said = () => clearTimeout(timer)
  ws.once("close", said)
  return said
}

/** One WebSocket endpoint of the node: its server, cap and keep-alive under the shared rules. */
export class SocketEndpoint {
  readonly wss: WebSocketServer
  private readonly heard = new WeakMap<WebSocket, boolean>()
  private readonly timer: NodeJS.Timeout
  private readonly name: string
  private readonly maxConnections: number
  readonly rules: SocketRules
  private readonly counters: NodeCounters
  private readonly authenticate: (req: IncomingMessage) => boolean

  constructor(options: {
    /** Label in /metrics (`ingest`, `tail`, `peer`). */
    readonly name: string
    /** Reasons the node closes this endpoint's sockets for (`closed`), shown in /metrics from zero. */
    readonly closeReasons: ReadonlyArray<string>
    readonly maxConnections: number
    /** Largest message ws buffers before closing with 1009. */
    readonly maxPayload: number
    readonly rules: SocketRules
    readonly counters: NodeCounters
    /** Whether an upgrade may proceed (default: it carries the token, when there is one). */
    readonly authenticate?: ((req: IncomingMessage) => boolean) | undefined
  }) {
    this.authenticate = options.authenticate ?? ((req) => authorized(options.rules.token, req))
    this.name = options.name
    this.maxConnections = options.maxConnections
    this.rules = options.rules
    this.counters = options.counters
    this.counters.endpoint(this.name, options.closeReasons)
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.maxPayload,
      perMessageDeflate: false,
      handleProtocols: selectProtocol
    })
    this.timer = setInterval(() => this.checkLiveness(), this.rules.pingIntervalMs)
    this.timer.unref()
  }

  get size(): number {
    return this.wss.clients.size
  }

  /**
   * The credentials (the token, unless the endpoint says otherwise) and the cap, checked before
   * anything else about the request: false when refused (the refusal is answered and counted).
   */
  admit(req: IncomingMessage, socket: Duplex): boolean {
    if (!this.authenticate(req)) {
      this.counters.upgradeRefused(this.name, "unauthorized")
      refuseUpgrade(
        socket,
        401,
        "Unauthorized",
        {
          error:
            this.rules.token === undefined
              ? "missing or unverified client certificate"
              : "missing or wrong bearer token"
        },
        {
          "WWW-Authenticate": "Bearer"
        }
      )
      return false
    }
    if (this.wss.clients.size >= this.maxConnections) {
      this.counters.upgradeRefused(this.name, "cap")
      refuseUpgrade(
        socket,
        503,
        "Service Unavailable",
        { error: `this node takes at most ${this.maxConnections} ${this.name} connections` },
        { "Retry-After": "5" }
      )
      return false
    }
    return true
  }

  /** Completes an admitted upgrade and hands the WebSocket over, watched by the keep-alive. */
  complete(req: IncomingMessage, socket: Duplex, head: Buffer, onSocket: (ws: WebSocket) => void): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.heard.set(ws, true)
      // Any byte from the peer shows it is there (a pong may queue behind a large frame it is sending).
      socket.on("data", () => this.heard.set(ws, true))
      onSocket(ws)
    })
  }

  /** Counts a socket the node closed for a reason of its own (`hello_timeout`, `stalled`). */
  closed(reason: string): void {
    this.counters.connectionClosed(this.name, reason)
  }

  private checkLiveness(): void {
    for (const ws of this.wss.clients) {
      if (ws.readyState !== ws.OPEN) continue
      if (ws.isPaused) {
        // Paused by the node (back-pressure): it is not reading, so it cannot hear the peer.
        this.heard.set(ws, true)
        continue
      }
      if (this.heard.get(ws) === false) {
        this.closed("ping_timeout")
        ws.terminate()
        continue
      }
      this.heard.set(ws, false)
      ws.ping()
    }
  }

  /** Closes every socket (1001) and stops the keep-alive. */
  close(reason: string): void {
    clearInterval(this.timer)
    for (const ws of this.wss.clients) ws.close(1001, reason)
    this.wss.close()
  }
}
