/**
 * This node's connection to one peer: dials `ws://peer/v1/peer` with the cluster token (or
 * `wss://`, presenting this node's certificate and checking the peer's against the cluster CA), says hello,
 * heartbeats, and carries this node's calls to the peer. The peer is up while it answers: no frame
 * for `heartbeatTimeout` (a crashed, paused or partitioned node) marks it down, fails the calls
 * waiting on it (their writes become hints) and fails new ones at once. A closed socket is redialled
 * with capped exponential backoff.
 */
import WebSocket from "ws"
import * as Protocol from "./PeerProtocol.js"

/** The cluster's TLS: this node's certificate and key (its client certificate) and the CA of them all. */
export interface PeerTls {
  readonly cert: Buffer
  readonly key: Buffer
  readonly ca: Buffer
}

export interface LinkOptions {
  readonly token: string | undefined
  /** Dial over TLS with a client certificate; undefined: plain `ws://`. */
  readonly tls: PeerTls | undefined
  /** Milliseconds between pings. */
  readonly heartbeatInterval: number
  /** Milliseconds without a frame after which the peer is down. */
  readonly heartbeatTimeout: number
  readonly hello: () => Protocol.Hello
  readonly status: () => Protocol.Status
  /** The peer's status, from its welcome and every pong. */
  readonly onStatus: (peer: string, status: Protocol.Status) => void
  /** The peer went up or down (as this node sees it). */
  readonly onLiveness: (peer: string, up: boolean) => void
  /** Why the peer refused this node, or could not be reached (logged once per reason). */
  readonly onProblem: (peer: string, reason: string) => void
}

/** A call failed because the peer is down or did not answer in time. */
export class PeerUnavailable extends Error {
  readonly peer: string
  constructor(peer: string, reason: string) {
    super(`peer ${peer} ${reason}`)
    this.peer = peer
  }
}

interface Pending {
  readonly resolve: (value: unknown) => void
  readonly reject: (error: Error) => void
  readonly timer: NodeJS.Timeout | undefined
}

export class PeerLink {
  readonly address: string
  private readonly options: LinkOptions
  private socket: WebSocket | undefined
  private welcomed = false
  private lastHeard = 0
  private isUp = false
  /** Whether it was ever up: a link that never was is still connecting (this node just started). */
  private everUp = false
  private upWaiters: Array<() => void> = []
  private attempt = 0
  private closed = false
  private readonly pending = new Map<number, Pending>()
  private nextId = 0
  private readonly heartbeat: NodeJS.Timeout
  private reconnect: NodeJS.Timeout | undefined
  /** The last problem reported, so a peer that stays away is logged once. */
  private lastProblem = ""

  constructor(address: string, options: LinkOptions) {
    this.address = address
    this.options = options
    this.heartbeat = setInterval(() => this.beat(), options.heartbeatInterval)
    this.heartbeat.unref()
    this.connect()
  }

  get up(): boolean {
    return this.isUp
  }

  /**
   * Resolves once the peer is up, or after `ms`: a node that has just started waits for its peers
   * before answering without them; a peer that was up and went down is not waited for.
   */
  whenUp(ms: number): Promise<void> {
    if (this.isUp || this.everUp) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.upWaiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  /** Calls sent and not answered yet. */
  get backlog(): number {
    return this.pending.size
  }

  /**
   * Sends a call, with `bulk` bytes after its arguments (`Protocol.encodeCallHead`); rejects with
   * PeerUnavailable when the peer is down, goes down, or `timeoutMs` passes.
   */
  call(op: string, args: unknown, timeoutMs?: number, bulk?: Uint8Array): Promise<unknown> {
    const socket = this.socket
    if (!this.isUp || socket === undefined || socket.readyState !== WebSocket.OPEN)
      return Promise.reject(new PeerUnavailable(this.address, "is down"))
    const id = ++this.nextId
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.pending.delete(id)
              reject(new PeerUnavailable(this.address, `did not answer ${op} within ${timeoutMs} ms`))
            }, timeoutMs)
      this.pending.set(id, { resolve, reject, timer })
      if (bulk === undefined) socket.send(Protocol.encode(["call", id, op, args]))
      else {
        // Two fragments of one message, back to back (nothing else is sent in between): the bulk
        // goes out as it is, the same bytes for every peer.
        socket.send(Protocol.encodeCallHead(id, op, args, bulk.length), { fin: false })
        socket.send(bulk, { fin: true })
      }
    })
  }

  /** Sends a one-way frame if the peer is up; false when it was not sent. */
  send(frame: Protocol.PeerFrame): boolean {
    if (!this.isUp || this.socket?.readyState !== WebSocket.OPEN) return false
    this.socket.send(Protocol.encode(frame))
    return true
  }

  close(): void {
    this.closed = true
    clearInterval(this.heartbeat)
    if (this.reconnect !== undefined) clearTimeout(this.reconnect)
    this.markDown("is closing")
    this.socket?.terminate()
  }

  private problem(reason: string): void {
    if (reason === this.lastProblem) return
    this.lastProblem = reason
    this.options.onProblem(this.address, reason)
  }

  private connect(): void {
    if (this.closed) return
    const tls = this.options.tls
    const socket = new WebSocket(`${tls === undefined ? "ws" : "wss"}://${this.address}${Protocol.path}`, {
      perMessageDeflate: false,
      handshakeTimeout: this.options.heartbeatTimeout,
      // A zero mask: ws then neither masks on send nor unmasks on receipt, a pass over every byte of
      // every replicated write on both ends. Masking guards proxies against a browser's script;
      // this client is a node, and authenticated.
      generateMask: (mask: Buffer) => {
        mask.fill(0)
      },
      ...(tls !== undefined && { cert: tls.cert, key: tls.key, ca: tls.ca }),
      ...(this.options.token !== undefined && { headers: { authorization: `Bearer ${this.options.token}` } })
    })
    this.socket = socket
    this.welcomed = false
    socket.on("open", () => {
      this.lastHeard = Date.now()
      socket.send(Protocol.encode(["hello", this.options.hello()]))
    })
    socket.on("unexpected-response", (_req, res) => {
      this.problem(`refused the connection: HTTP ${res.statusCode}`)
      socket.terminate()
    })
    socket.on("message", (data: Buffer) => {
      if (socket !== this.socket) return
      const frame = Protocol.decode(data)
      if (frame === undefined) return
      this.lastHeard = Date.now()
      switch (frame[0]) {
        case "welcome":
          this.welcomed = true
          this.attempt = 0
          this.lastProblem = ""
          this.options.onStatus(this.address, frame[1])
          this.markUp()
          return
        case "refused":
          this.problem(`refused this node: ${frame[1]}`)
          return
        case "pong":
          this.options.onStatus(this.address, frame[1])
          if (this.welcomed) this.markUp()
          return
        case "reply":
        case "fail": {
          const p = this.pending.get(frame[1])
          if (p === undefined) return
          this.pending.delete(frame[1])
          if (p.timer !== undefined) clearTimeout(p.timer)
          if (frame[0] === "reply") p.resolve(frame[2])
          else p.reject(new Error(frame[2]))
          return
        }
        default:
          return
      }
    })
    socket.on("error", (e) => {
      this.problem(`cannot be reached: ${e.message}`)
    })
    socket.on("close", () => {
      if (socket !== this.socket) return
      this.socket = undefined
      this.markDown("closed the connection")
      this.scheduleReconnect()
    })
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnect !== undefined) return
    const ceiling = Math.min(this.options.heartbeatTimeout, 100 * 2 ** this.attempt)
    this.attempt = Math.min(this.attempt + 1, 20)
    this.reconnect = setTimeout(
      () => {
        this.reconnect = undefined
        this.connect()
      },
      ceiling / 2 + (Math.random() * ceiling) / 2
    )
    this.reconnect.unref()
  }

  private beat(): void {
    const socket = this.socket
    if (socket === undefined || socket.readyState !== WebSocket.OPEN) return
    if (this.isUp && Date.now() - this.lastHeard > this.options.heartbeatTimeout)
      this.markDown(`did not answer for ${this.options.heartbeatTimeout} ms`)
    if (this.welcomed) socket.send(Protocol.encode(["ping", this.options.status()]))
  }

  private markUp(): void {
    if (this.isUp) return
    this.isUp = true
    this.everUp = true
    const waiting = this.upWaiters
    this.upWaiters = []
    for (const w of waiting) w()
    this.options.onLiveness(this.address, true)
  }

  private markDown(reason: string): void {
    const wasUp = this.isUp
    this.isUp = false
    for (const p of this.pending.values()) {
      if (p.timer !== undefined) clearTimeout(p.timer)
      p.reject(new PeerUnavailable(this.address, reason))
    }
    this.pending.clear()
    if (wasUp) this.options.onLiveness(this.address, false)
  }
}
