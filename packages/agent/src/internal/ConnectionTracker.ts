/**
 * Per-connection stream reassembly: socket events (keyed by pid + fd) in, HTTP exchanges out.
 *
 * A connection's role comes from how it was opened: `accept` makes it a server connection (requests
 * flow in, responses out), `connect` a client connection (requests out, responses in). For sockets
 * opened before tracing began, the role is inferred from whichever direction first carries a request.
 * A new accept/connect/close on the same pid + fd resets the state (fds are reused).
 *
 * Requests are queued per connection (pipelining) and paired with responses in order. 1xx responses
 * leave the request waiting for its final response; a 101 or a successful CONNECT turns the connection
 * opaque. Connections whose first bytes are not HTTP/1.x cost one check and a byte counter from then
 * on, and show up only in connection-level metrics. First bytes too few to tell (a read of `GE`, a
 * client writing its request a few bytes at a time) are kept until they do.
 */
import { mayStartRequest, mayStartResponse, startsRequest, startsResponse } from "./HttpBytes.js"
import { HttpParser, type HttpParserHandler, type MessageHead } from "./HttpParser.js"

export type Role = "server" | "client"

export interface Endpoint {
  readonly address: string
  readonly port: number
}

export interface Connection {
  readonly pid: number
  readonly fd: number
  /** The capture's target of the process (which identity its telemetry carries). */
  readonly target: number
  role: Role | undefined
  readonly local: Endpoint | undefined
  readonly peer: Endpoint | undefined
  readonly openedNs: bigint
  lastNs: bigint
  bytesIn: number
  bytesOut: number
  /** At least one HTTP message was parsed on it. */
  http: boolean
  /** Not HTTP (or no longer: upgraded): only bytes are counted. */
  opaque: boolean
}

/** A request whose head was seen; `context` is the consumer's (trace ids etc.), set in `onRequest`. */
export interface PendingRequest<C> {
  readonly connection: Connection
  readonly head: MessageHead
  /** Time of the syscall carrying the request's first byte. */
  readonly startNs: bigint
  /** The thread that read (server) or wrote (client) the first byte. */
  readonly tid: number
  context: C | undefined
}

export type Outcome =
  /** The whole response was seen. */
  | "complete"
  /** The connection closed (or was reset) before any response. */
  | "no_response"
  /** The response started but its end was not seen (closed mid-body, lost framing). */
  | "response_truncated"

export interface HttpExchange<C> extends PendingRequest<C> {
  readonly response: MessageHead | undefined
  /** Time of the syscall carrying the response's last byte (or the close, without a response). */
  readonly endNs: bigint
  readonly outcome: Outcome
}

/** One object per request, completed in place (the hot path allocates nothing more per exchange). */
class Exchange<C> implements HttpExchange<C> {
  context: C | undefined = undefined
  response: MessageHead | undefined = undefined
  endNs: bigint
  outcome: Outcome = "no_response"

  constructor(
    readonly connection: Connection,
    readonly head: MessageHead,
    readonly startNs: bigint,
    readonly tid: number
  ) {
    this.endNs = startNs
  }
}

/**
 * Why a request did not become a span (each counted once):
 * - `ring_full`: the kernel could not write the request's or the response's record (the ring
 *   buffer was full);
 * - `unparsed`: the request or its response could not be parsed (lost framing, bytes past the
 *   capture limit hiding a message);
 * - `shutdown`: still waiting for its response when the agent stopped.
 */
export type DropReason = "ring_full" | "unparsed" | "shutdown"

export interface ConnectionEvents<C> {
  onRequest(request: PendingRequest<C>): void
  onExchange(exchange: HttpExchange<C>): void
  onConnectionEnd(connection: Connection, endNs: bigint): void
  /**
   * A request answered (or, at shutdown, still waiting) that will not become an exchange; `request`
   * when it was seen (not for a response whose request never was).
   */
  onDropped(connection: Connection, reason: DropReason, request?: PendingRequest<C>): void
}

export interface TrackerOptions {
  /** Pipelined requests waiting for responses per connection; older ones are answered `no_response`. Default 256. */
  readonly maxPendingPerConnection?: number
  /** Connections tracked at once; beyond it the oldest is ended (its close was probably lost). Default 65,536. */
  readonly maxConnections?: number
}

/** A connection's state: its two parsers and the request queue. */
class Stream<C> {
  readonly connection: Connection
  readonly requests: HttpParser
  readonly responses: HttpParser
  readonly queue: Array<Exchange<C>> = []
  /** The request the response being parsed answers. */
  answering: Exchange<C> | undefined
  responseHead: MessageHead | undefined
  currentTid = 0
  /** Why what the parsers cannot see is missing: a record the kernel lost, or the parsers' own limits. */
  missing: DropReason = "unparsed"
  /** The kernel lost records of this connection: unpaired responses are blamed on the ring. */
  lossy = false
  /** The first bytes of a connection without a role, too few yet to tell (`GE`, then `T / HTTP/1.1…`). */
  early:
    | { readonly direction: "ingress" | "egress"; readonly bytes: Uint8Array; readonly timestampNs: bigint }
    | undefined

  constructor(
    connection: Connection,
    private readonly events: ConnectionEvents<C>,
    private readonly maxPending: number
  ) {
    this.connection = connection
    this.requests = new HttpParser("request", this.requestHandler)
    this.responses = new HttpParser("response", this.responseHandler)
  }

  private readonly requestHandler: HttpParserHandler = {
    onHead: (head, firstByteNs) => {
      this.connection.http = true
      const request = new Exchange<C>(this.connection, head, firstByteNs, this.currentTid)
      if (this.queue.length >= this.maxPending) {
        const dropped = this.queue.shift()
        if (dropped !== undefined) this.emit(dropped, undefined, firstByteNs, "no_response")
      }
      this.queue.push(request)
      this.events.onRequest(request)
      return false
    },
    onEnd: () => {},
    onNotHttp: () => {
      this.connection.opaque = true
    },
    // Its response will come unpaired and be counted then.
    onHidden: () => {}
  }

  private readonly responseHandler: HttpParserHandler = {
    onHead: (head, firstByteNs) => {
      if (head.statusCode < 200) {
        if (head.statusCode === 101) {
          const request = this.queue.shift()
          if (request !== undefined) this.emit(request, head, firstByteNs, "complete")
          this.becomeOpaque()
        }
        // 100 Continue, 103 Early Hints: the final response is still to come.
        return true
      }
      const request = this.queue.shift()
      // A response to a request we never saw (its record lost, or its head unparseable).
      if (request === undefined) this.events.onDropped(this.connection, this.lossy ? "ring_full" : "unparsed")
      this.answering = request
      this.responseHead = head
      return request?.head.method === "HEAD"
    },
    onEnd: (lastByteNs, complete) => {
      const request = this.answering
      const head = this.responseHead
      this.answering = undefined
      this.responseHead = undefined
      if (request === undefined || head === undefined) return
      this.emit(request, head, lastByteNs, complete ? "complete" : "response_truncated")
      if (request.head.method === "CONNECT" && head.statusCode < 300) this.becomeOpaque()
    },
    onNotHttp: () => {
      this.connection.opaque = true
    },
    // A response we cannot see answered the oldest request waiting since before it (HTTP/1.x
    // answers in order), or a request we never saw either.
    onHidden: (timestampNs) => {
      const oldest = this.queue[0]
      const answered = oldest !== undefined && oldest.startNs <= timestampNs ? this.queue.shift() : undefined
      this.events.onDropped(this.connection, this.missing, answered)
    }
  }

  private becomeOpaque(): void {
    this.connection.opaque = true
    this.requests.markOpaque()
    this.responses.markOpaque()
  }

  emit(request: Exchange<C>, response: MessageHead | undefined, endNs: bigint, outcome: Outcome): void {
    request.response = response
    request.endNs = endNs < request.startNs ? request.startNs : endNs
    request.outcome = outcome
    this.events.onExchange(request)
  }

  /** Ends everything still open: bodies running until close finish, unanswered requests are reported. */
  finish(endNs: bigint): void {
    this.responses.close()
    this.requests.close()
    for (const request of this.queue) this.emit(request, undefined, endNs, "no_response")
    this.queue.length = 0
  }

  /**
   * The agent stops while the connection is open: a response under way is reported as far as it
   * was seen; requests still waiting are counted as dropped (their answers may come after the
   * agent stopped looking, so reporting them as unanswered would be wrong).
   */
  abandon(): void {
    this.responses.close()
    this.requests.close()
    for (const request of this.queue) this.events.onDropped(this.connection, "shutdown", request)
    this.queue.length = 0
  }
}

const connectionKey = (pid: number, fd: number): number => pid * 1_073_741_824 + fd
const empty = new Uint8Array(0)

export class ConnectionTracker<C> {
  private readonly streams = new Map<number, Stream<C>>()
  private readonly maxPending: number
  private readonly maxConnections: number
  /** Connections ended because the table was full. */
  evicted = 0
  /** Records the kernel lost on sockets no connection was tracked for (nothing to blame them on). */
  lostUntracked = 0
  /**
   * Untracked sockets that lost records (their accept and first request, say): if the next thing
   * they carry is a response, its connection is tracked from there and the response counted.
   */
  private readonly lossyUntracked = new Set<number>()

  constructor(
    private readonly events: ConnectionEvents<C>,
    options: TrackerOptions = {}
  ) {
    this.maxPending = options.maxPendingPerConnection ?? 256
    this.maxConnections = options.maxConnections ?? 65_536
  }

  get size(): number {
    return this.streams.size
  }

  /** A connection on pid + fd is being tracked. */
  has(pid: number, fd: number): boolean {
    return this.streams.has(connectionKey(pid, fd))
  }

  /** A connection was accepted (role server) or connected (role client); any previous state on the fd ends. */
  open(
    pid: number,
    fd: number,
    role: Role | undefined,
    timestampNs: bigint,
    local: Endpoint | undefined,
    peer: Endpoint | undefined,
    target = 1
  ): void {
    this.close(pid, fd, timestampNs)
    if (this.streams.size >= this.maxConnections) {
      // Map order is opening order: the oldest goes.
      const oldest = this.streams.values().next()
      if (oldest.done !== true) {
        this.close(oldest.value.connection.pid, oldest.value.connection.fd, timestampNs)
        this.evicted++
      }
    }
    const connection: Connection = {
      pid,
      fd,
      target,
      role,
      local,
      peer,
      openedNs: timestampNs,
      lastNs: timestampNs,
      bytesIn: 0,
      bytesOut: 0,
      http: false,
      opaque: false
    }
    this.streams.set(connectionKey(pid, fd), new Stream(connection, this.events, this.maxPending))
  }

  /**
   * One read (`ingress`) or write (`egress`) on a socket: `payload` is what was captured of the
   * `totalLength` bytes the syscall moved.
   */
  data(
    pid: number,
    tid: number,
    fd: number,
    direction: "ingress" | "egress",
    payload: Uint8Array,
    totalLength: number,
    timestampNs: bigint,
    target = 1
  ): void {
    const key = connectionKey(pid, fd)
    let stream = this.streams.get(key)
    if (stream === undefined) {
      // A socket from before tracing began: infer the role from the first request we see; after a
      // loss, a response tells it too (and is counted as one whose request was lost).
      const lossy = this.lossyUntracked.delete(key)
      const response = lossy && startsResponse(payload)
      if (!response && !startsRequest(payload)) return
      const server = (direction === "ingress") !== response
      this.open(pid, fd, server ? "server" : "client", timestampNs, undefined, undefined, target)
      stream = this.streams.get(key)
      if (stream === undefined) return
      stream.lossy = lossy
    }
    const connection = stream.connection
    connection.lastNs = timestampNs
    if (direction === "ingress") connection.bytesIn += totalLength
    else connection.bytesOut += totalLength
    if (connection.opaque) return
    stream.currentTid = tid
    let early: Stream<C>["early"]
    if (connection.role === undefined) {
      early = stream.early?.direction === direction ? stream.early : undefined
      stream.early = undefined
      const first = early === undefined ? payload : Buffer.concat([early.bytes, payload])
      const firstNs = early?.timestampNs ?? timestampNs
      if (!this.settleRole(stream, direction, first, firstNs, totalLength === payload.byteLength)) return
    }
    const carriesRequests = (connection.role === "server") === (direction === "ingress")
    const parser = carriesRequests ? stream.requests : stream.responses
    if (early !== undefined) parser.push(early.bytes, 0, early.timestampNs)
    const uncaptured = totalLength > payload.byteLength ? totalLength - payload.byteLength : 0
    parser.push(payload, uncaptured, timestampNs)
  }

  /**
   * A connection opened without a role (the capture's open record says who is at either end, not
   * who connected): its first bytes tell. A request makes the side that reads it the server; a
   * response first (the answer to a request from before tracing, or one whose record was lost)
   * tells too, and is skipped (counted if the kernel lost records here); bytes too few to tell
   * (`GE`, then `T / HTTP/1.1…`), all captured, are kept until they can, from `firstNs`; anything
   * else is not HTTP/1.x. Returns whether these bytes go on to the parsers.
   */
  private settleRole(
    stream: Stream<C>,
    direction: "ingress" | "egress",
    payload: Uint8Array,
    firstNs: bigint,
    captured: boolean
  ): boolean {
    const connection = stream.connection
    if (startsRequest(payload)) {
      connection.role = direction === "ingress" ? "server" : "client"
      return true
    }
    if (startsResponse(payload)) {
      connection.role = direction === "egress" ? "server" : "client"
      if (stream.lossy) return true
      stream.responses.awaitNextMessage()
      return false
    }
    const end = payload.byteLength
    if (captured && (mayStartRequest(payload, 0, end) || mayStartResponse(payload, 0, end)))
      stream.early = { direction, bytes: Uint8Array.from(payload), timestampNs: firstNs }
    else connection.opaque = true
    return false
  }

  /**
   * The kernel could not write a record of `totalLength` bytes moved on pid + fd: the parsers skip
   * them as unseen bytes (counted through a body of known length; a message they hid is reported
   * through `onDropped`, blamed on the ring).
   */
  lost(
    pid: number,
    fd: number,
    direction: "ingress" | "egress",
    totalLength: number,
    timestampNs: bigint
  ): void {
    const key = connectionKey(pid, fd)
    const stream = this.streams.get(key)
    if (stream === undefined) {
      this.lostUntracked++
      if (this.lossyUntracked.size >= this.maxConnections) this.lossyUntracked.clear()
      this.lossyUntracked.add(key)
      return
    }
    stream.lossy = true
    stream.missing = "ring_full"
    this.data(
      pid,
      stream.currentTid,
      fd,
      direction,
      empty,
      totalLength,
      timestampNs,
      stream.connection.target
    )
    stream.missing = "unparsed"
  }

  /** The fd was closed (or its process exited): report what is open and forget the connection. */
  close(pid: number, fd: number, timestampNs: bigint): void {
    const key = connectionKey(pid, fd)
    this.lossyUntracked.delete(key)
    const stream = this.streams.get(key)
    if (stream === undefined) return
    this.streams.delete(key)
    stream.finish(timestampNs)
    this.events.onConnectionEnd(stream.connection, timestampNs)
  }

  /** A process exited: all its connections end. */
  closeProcess(pid: number, timestampNs: bigint): void {
    for (const stream of [...this.streams.values()]) {
      if (stream.connection.pid === pid) this.close(pid, stream.connection.fd, timestampNs)
    }
  }

  /** The agent stops: every connection is abandoned as it stands (see `Stream.abandon`). */
  abandonAll(): void {
    for (const stream of this.streams.values()) stream.abandon()
    this.streams.clear()
  }

  /** Ends connections idle since before `idleSinceNs` (their close was never seen). Returns how many. */
  sweep(idleSinceNs: bigint, nowNs: bigint): number {
    let swept = 0
    for (const stream of [...this.streams.values()]) {
      if (stream.connection.lastNs < idleSinceNs) {
        this.close(stream.connection.pid, stream.connection.fd, nowNs)
        swept++
      }
    }
    return swept
  }
}
