/**
 * An incremental HTTP/1.x parser for one direction of one connection, built for captured traffic:
 * bytes arrive in arbitrary pieces (one per syscall), some bytes were never captured (the kernel copies
 * only the first N bytes of each syscall), and the capture may start or end mid-message.
 *
 * It extracts only what telemetry needs (start line, framing headers, trace headers) and skips bodies
 * by counting, never storing them. Pure: no I/O, no clocks; timestamps come with the bytes.
 *
 * Framing (RFC 9112 §6): `Transfer-Encoding: chunked` wins over `Content-Length`; a request without
 * either has no body; a response without either runs until the connection closes, except 1xx, 204,
 * 304 and answers to HEAD (the handler says so), which never have one.
 *
 * Uncaptured bytes (`skip`) inside a body with a known length are simply counted. When they hide the
 * framing (inside a head, or across a chunk-size line) the parser loses sync and recovers at the next
 * syscall whose bytes start like a message (`GET /…`, `HTTP/1.1 …`); a chunked body whose framing was
 * lost ends at the first syscall ending with the last-chunk marker `0\r\n\r\n`.
 */

import {
  bytesAre,
  COLON,
  CR,
  contentLengthAt,
  crlfcrlf,
  digitsAt,
  endsWith,
  httpPrefixText,
  LF,
  lastChunk,
  mayStartRequest,
  mayStartResponse,
  methodAt,
  nameIs,
  SP,
  startsRequest,
  startsResponse,
  valueAt,
  ZERO
} from "./HttpBytes.js"

export type MessageKind = "request" | "response"

/** What the parser extracts from a message head. Absent headers are `undefined`. */
export interface MessageHead {
  readonly kind: MessageKind
  /** Request method (upper case), `""` for responses. */
  readonly method: string
  /** Request target as sent (origin form `/path?q`, or absolute form), `""` for responses. */
  readonly target: string
  /** Response status code, 0 for requests. */
  readonly statusCode: number
  /** `1.0` or `1.1`. */
  readonly version: string
  /** Content-Length, or -1 when absent or invalid. */
  readonly contentLength: number
  readonly chunked: boolean
  /** False on `Connection: close` (or an HTTP/1.0 message without `Connection: keep-alive`). */
  readonly keepAlive: boolean
  readonly host: string | undefined
  readonly traceparent: string | undefined
  readonly tracestate: string | undefined
  readonly correlationId: string | undefined
  /** The capture ended inside the head: headers after the cut are unknown. */
  readonly truncated: boolean
}

export interface HttpParserHandler {
  /**
   * A head was parsed. `firstByteNs` is the time of the syscall carrying the message's first byte.
   * Return true when the message cannot have a body whatever its headers say (the response to HEAD).
   */
  onHead(head: MessageHead, firstByteNs: bigint): boolean
  /**
   * The message ended. `lastByteNs` is the time of the syscall carrying its last byte; `complete` is
   * false when the end is inferred (lost framing, truncated head, connection closed mid-body).
   */
  onEnd(lastByteNs: bigint, complete: boolean): void
  /** The first bytes of the stream are not HTTP/1.x: nothing more is parsed on this stream. */
  onNotHttp(): void
  /**
   * Bytes that were never seen began a message (or several): one the parser cannot report. A whole
   * syscall moved between messages or while out of sync without any byte captured (a record the
   * kernel could not write), or bytes past the captured ones after a message ended.
   */
  onHidden(timestampNs: bigint): void
}

/** Heads larger than this are not HTTP worth parsing (Node's default limit is 16 KiB). */
export const maxHeadBytes = 64 * 1024

enum State {
  Idle,
  Head,
  BodyLength,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  BodyUntilClose,
  /** Framing lost: wait for a syscall starting like a message. */
  Desync,
  /** A chunked body's framing was lost: end at a syscall ending with `0\r\n\r\n`. */
  ChunkedLost,
  /** Not HTTP, or upgraded (WebSocket, CONNECT tunnel): ignore everything. */
  Opaque
}

const asBuffer = (bytes: Uint8Array): Buffer =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

export class HttpParser {
  private state = State.Idle
  /** Bytes of the head so far, when it spans several syscalls. */
  private head: Buffer | undefined
  private remaining = 0
  private chunkLine = ""
  private firstByteNs = 0n
  private lastByteNs = 0n
  /** Whether any message started on this stream (decides "not HTTP" versus "lost sync"). */
  private seenMessage = false
  private messageOpen = false

  constructor(
    readonly kind: MessageKind,
    private readonly handler: HttpParserHandler
  ) {}

  /** True once the stream is known not to carry (or no longer carry) HTTP/1.x. */
  get opaque(): boolean {
    return this.state === State.Opaque
  }

  /** Ignore bytes until a syscall starts like a message (the rest of a message seen mid-way). */
  awaitNextMessage(): void {
    this.head = undefined
    this.messageOpen = false
    this.state = State.Desync
  }

  /** Stop parsing this stream (after a protocol upgrade or a successful CONNECT). */
  markOpaque(): void {
    this.state = State.Opaque
    this.head = undefined
  }

  /**
   * One syscall's bytes: `captured` is what the kernel copied, followed by `uncaptured` bytes the
   * syscall moved that were not copied.
   */
  push(captured: Uint8Array, uncaptured: number, timestampNs: bigint): void {
    if (this.state === State.Opaque) return
    if (
      captured.byteLength === 0 &&
      uncaptured > 0 &&
      (this.state === State.Idle || this.state === State.Desync)
    ) {
      // A syscall we saw nothing of, between messages: it carried (at least) one.
      this.state = State.Desync
      this.handler.onHidden(timestampNs)
      return
    }
    if (this.state === State.Desync || this.state === State.ChunkedLost) {
      if (!this.resync(asBuffer(captured), uncaptured, timestampNs)) return
    }
    if (captured.byteLength > 0) this.feed(asBuffer(captured), timestampNs)
    if (uncaptured > 0) this.skip(uncaptured, timestampNs)
  }

  /** The connection closed: a body running until close ends here; anything else open is cut short. */
  close(): void {
    if (this.messageOpen) {
      this.endMessage(this.lastByteNs, this.state === State.BodyUntilClose)
    }
    this.state = State.Opaque
    this.head = undefined
  }

  private feed(buf: Buffer, ts: bigint): void {
    let pos = 0
    const len = buf.length
    while (pos < len) {
      switch (this.state) {
        case State.Idle: {
          // Tolerate stray CRLFs between messages (RFC 9112 §2.2).
          const byte = buf[pos]
          if (byte === CR || byte === LF) {
            pos++
            continue
          }
          this.state = State.Head
          this.firstByteNs = ts
          this.lastByteNs = ts
          this.head = undefined
          continue
        }
        case State.Head: {
          pos = this.feedHead(buf, pos, ts)
          continue
        }
        case State.BodyLength: {
          const take = Math.min(this.remaining, len - pos)
          this.remaining -= take
          pos += take
          this.lastByteNs = ts
          if (this.remaining === 0) this.endMessage(ts, true)
          continue
        }
        case State.ChunkSize: {
          const nl = buf.indexOf(LF, pos)
          const end = nl === -1 ? len : nl
          this.chunkLine += buf.toString("latin1", pos, end)
          this.lastByteNs = ts
          if (nl === -1) {
            if (this.chunkLine.length > 1024) this.loseSync(ts)
            return
          }
          pos = nl + 1
          const size = Number.parseInt(this.chunkLine, 16)
          this.chunkLine = ""
          if (!Number.isFinite(size) || size < 0) {
            this.loseSync(ts)
            continue
          }
          if (size === 0) {
            this.state = State.Trailers
          } else {
            this.remaining = size
            this.state = State.ChunkData
          }
          continue
        }
        case State.ChunkData: {
          const take = Math.min(this.remaining, len - pos)
          this.remaining -= take
          pos += take
          this.lastByteNs = ts
          if (this.remaining === 0) {
            this.remaining = 2
            this.state = State.ChunkDataEnd
          }
          continue
        }
        case State.ChunkDataEnd: {
          // The CRLF after chunk data (a bare LF is tolerated).
          const byte = buf[pos]
          if (byte === CR && this.remaining === 2) {
            pos++
            this.remaining = 1
          } else if (byte === LF) {
            pos++
            this.state = State.ChunkSize
          } else {
            this.loseSync(ts)
          }
          continue
        }
        case State.Trailers: {
          // Trailer lines until an empty line; we keep none of them.
          const nl = buf.indexOf(LF, pos)
          this.lastByteNs = ts
          if (nl === -1) {
            this.chunkLine += buf.toString("latin1", pos, len)
            if (this.chunkLine.length > maxHeadBytes) this.loseSync(ts)
            return
          }
          const line = this.chunkLine + buf.toString("latin1", pos, nl)
          this.chunkLine = ""
          pos = nl + 1
          if (line === "" || line === "\r") this.endMessage(ts, true)
          continue
        }
        case State.BodyUntilClose: {
          this.lastByteNs = ts
          return
        }
        case State.Desync:
        case State.ChunkedLost:
        case State.Opaque:
          return
      }
    }
  }

  /** Accumulates head bytes until the blank line; returns the position after what it consumed. */
  private feedHead(buf: Buffer, pos: number, ts: bigint): number {
    this.lastByteNs = ts
    const prior = this.head
    if (prior === undefined) {
      const end = buf.indexOf(crlfcrlf, pos)
      if (end !== -1) {
        this.parseHead(buf, pos, end, false)
        return end + 4
      }
      this.head = Buffer.from(buf.subarray(pos))
    } else {
      // Look for the blank line across the boundary with what we already have.
      const joined = Buffer.concat([prior, buf.subarray(pos)])
      const end = joined.indexOf(crlfcrlf, Math.max(0, prior.length - 3))
      if (end !== -1) {
        this.head = undefined
        this.parseHead(joined, 0, end, false)
        return pos + (end + 4 - prior.length)
      }
      this.head = joined
    }
    const pending = this.head
    if (!this.plausibleStart(pending, 0, pending.length)) {
      this.reject(ts)
    } else if (pending.length > maxHeadBytes) {
      this.loseSync(ts)
    }
    return buf.length
  }

  /** Uncaptured bytes: counted through bodies, fatal to framing elsewhere. */
  private skip(n: number, ts: bigint): void {
    switch (this.state) {
      case State.BodyLength: {
        const take = Math.min(this.remaining, n)
        this.remaining -= take
        this.lastByteNs = ts
        if (this.remaining === 0) {
          this.endMessage(ts, true)
          // Bytes beyond the body were a next message we could not see.
          if (n > take) {
            this.loseSync(ts)
            this.handler.onHidden(ts)
          }
        }
        return
      }
      case State.ChunkData: {
        this.lastByteNs = ts
        if (n <= this.remaining) {
          this.remaining -= n
          if (this.remaining === 0) {
            this.remaining = 2
            this.state = State.ChunkDataEnd
          }
          return
        }
        // The gap swallows chunk framing: keep the message open, find its end heuristically.
        this.state = State.ChunkedLost
        return
      }
      case State.ChunkSize:
      case State.ChunkDataEnd:
      case State.Trailers:
        this.lastByteNs = ts
        this.state = State.ChunkedLost
        this.chunkLine = ""
        return
      case State.BodyUntilClose:
        this.lastByteNs = ts
        return
      case State.Head: {
        // The head was cut by the capture limit: report what we have, then wait for a fresh start.
        const pending = this.head
        this.head = undefined
        if (pending !== undefined && this.plausibleStart(pending, 0, pending.length)) {
          const end = pending.lastIndexOf("\r\n")
          if (this.parseHead(pending, 0, end === -1 ? pending.length : end, true)) {
            if (this.messageOpen) this.endMessage(ts, false)
          }
        }
        this.messageOpen = false
        if ((this.state as State) !== State.Opaque) this.state = State.Desync
        return
      }
      case State.Idle:
        // The captured bytes ended a message; the rest began one we cannot see.
        this.state = State.Desync
        this.handler.onHidden(ts)
        return
      default:
        return
    }
  }

  /**
   * Called at a syscall boundary while out of sync. Returns true when parsing should resume with
   * these bytes (from a clean Idle state).
   */
  private resync(buf: Buffer, uncaptured: number, ts: bigint): boolean {
    const startsMessage = this.looksLikeStart(buf)
    if (this.state === State.ChunkedLost) {
      if (startsMessage) {
        // The next message began, so this one ended with the last syscall before it.
        this.endMessage(this.lastByteNs, true)
        this.state = State.Idle
        return true
      }
      this.lastByteNs = ts
      if (uncaptured === 0 && buf.length >= 5 && endsWith(buf, lastChunk)) this.endMessage(ts, true)
      return false
    }
    if (startsMessage) {
      this.state = State.Idle
      return true
    }
    return false
  }

  private looksLikeStart(buf: Buffer): boolean {
    return this.kind === "response" ? startsResponse(buf) : startsRequest(buf)
  }

  /** Could bytes [start, end) be the beginning of a message of our kind? Checked incrementally. */
  private plausibleStart(buf: Buffer, start: number, end: number): boolean {
    return this.kind === "response" ? mayStartResponse(buf, start, end) : mayStartRequest(buf, start, end)
  }

  /** Parses head bytes [start, end) (excluding the blank line) and moves to the body state. */
  private parseHead(buf: Buffer, start: number, end: number, truncated: boolean): boolean {
    if (!this.plausibleStart(buf, start, end)) {
      this.reject(this.lastByteNs)
      return false
    }
    // Work on the bytes: only the values we keep become (flat, small) strings.
    let lineEnd = start
    while (lineEnd < end && !(buf[lineEnd] === CR && buf[lineEnd + 1] === LF)) lineEnd++
    let method = ""
    let target = ""
    let statusCode = 0
    let version = "1.1"
    if (this.kind === "request") {
      let sp1 = start
      while (sp1 < lineEnd && buf[sp1] !== SP) sp1++
      let sp2 = lineEnd - 1
      while (sp2 > sp1 && buf[sp2] !== SP) sp2--
      const complete =
        sp1 < lineEnd && sp2 > sp1 && lineEnd - sp2 === 9 && bytesAre(buf, sp2 + 1, httpPrefixText)
      if (!complete) {
        if (!truncated || sp1 >= lineEnd) return this.malformed()
        // The request line itself was cut: keep the method and the part of the target we saw.
        method = buf.toString("latin1", start, sp1)
        target = buf.toString("latin1", sp1 + 1, lineEnd)
      } else {
        // plausibleStart checked it is a known method.
        method = methodAt(buf, start, sp1) ?? buf.toString("latin1", start, sp1)
        target = buf.toString("latin1", sp1 + 1, sp2)
        if (buf[sp2 + 8] === ZERO) version = "1.0"
      }
    } else {
      statusCode = digitsAt(buf, start + 9, 3)
      if (lineEnd - start < 12 || buf[start + 8] !== SP || !(statusCode >= 100 && statusCode <= 999)) {
        return this.malformed()
      }
      if (buf[start + 7] === ZERO) version = "1.0"
    }
    let contentLength = -1
    let chunked = false
    let connection: string | undefined
    let host: string | undefined
    let traceparent: string | undefined
    let tracestate: string | undefined
    let correlationId: string | undefined
    let pos = lineEnd + 2
    while (pos < end) {
      let colon = -1
      let next = pos
      while (next < end && !(buf[next] === CR && buf[next + 1] === LF)) {
        if (colon === -1 && buf[next] === COLON) colon = next
        next++
      }
      if (colon > pos) {
        // Compare by length first: almost every header is one we do not need.
        switch (colon - pos) {
          case 4:
            if (nameIs(buf, pos, "host")) host = valueAt(buf, colon + 1, next)
            break
          case 10:
            if (nameIs(buf, pos, "connection")) connection = valueAt(buf, colon + 1, next).toLowerCase()
            else if (nameIs(buf, pos, "tracestate")) tracestate = valueAt(buf, colon + 1, next)
            break
          case 11:
            if (nameIs(buf, pos, "traceparent")) {
              // A second traceparent makes the header invalid (W3C §3.2.2.1): treat as absent.
              traceparent = traceparent === undefined ? valueAt(buf, colon + 1, next) : ""
            }
            break
          case 14:
            if (nameIs(buf, pos, "content-length")) {
              const parsed = contentLengthAt(buf, colon + 1, next)
              // Conflicting lengths are a framing error; treat the length as unknown.
              contentLength = contentLength !== -1 && contentLength !== parsed ? -2 : parsed
            }
            break
          case 17:
            if (nameIs(buf, pos, "transfer-encoding")) {
              chunked = /(?:^|,)\s*chunked\s*$/i.test(valueAt(buf, colon + 1, next))
            }
            break
          case 20:
            if (nameIs(buf, pos, "x-iii-correlation-id")) correlationId = valueAt(buf, colon + 1, next)
            break
        }
      }
      pos = next + 2
    }
    if (contentLength === -2) contentLength = -1
    const keepAlive =
      connection === undefined
        ? version !== "1.0"
        : version === "1.0"
          ? connection.includes("keep-alive")
          : !connection.includes("close")
    const head: MessageHead = {
      kind: this.kind,
      method,
      target,
      statusCode,
      version,
      contentLength,
      chunked,
      keepAlive,
      host,
      traceparent: traceparent === "" ? undefined : traceparent,
      tracestate,
      correlationId,
      truncated
    }
    this.seenMessage = true
    this.messageOpen = true
    const bodyless = this.handler.onHead(head, this.firstByteNs)
    if (truncated) return true
    if (this.state === State.Opaque) {
      // The handler upgraded the stream while seeing this head.
      this.messageOpen = false
      this.handler.onEnd(this.lastByteNs, true)
      return true
    }
    const noBody =
      bodyless || (this.kind === "response" && (statusCode < 200 || statusCode === 204 || statusCode === 304))
    if (noBody) {
      this.endMessage(this.lastByteNs, true)
    } else if (chunked) {
      this.state = State.ChunkSize
      this.chunkLine = ""
    } else if (contentLength > 0) {
      this.state = State.BodyLength
      this.remaining = contentLength
    } else if (contentLength === 0 || this.kind === "request") {
      this.endMessage(this.lastByteNs, true)
    } else {
      this.state = State.BodyUntilClose
    }
    return true
  }

  private endMessage(ts: bigint, complete: boolean): void {
    this.messageOpen = false
    if (this.state !== State.Opaque) this.state = State.Idle
    this.handler.onEnd(ts, complete)
  }

  /** The head is not HTTP: on a fresh stream that settles it; later on, it is lost sync. */
  private reject(ts: bigint): void {
    this.head = undefined
    this.messageOpen = false
    if (!this.seenMessage) {
      this.state = State.Opaque
      this.handler.onNotHttp()
    } else {
      this.loseSync(ts)
    }
  }

  private malformed(): false {
    this.reject(this.lastByteNs)
    return false
  }

  private loseSync(ts: bigint): void {
    this.head = undefined
    this.chunkLine = ""
    if (this.messageOpen) {
      this.messageOpen = false
      this.state = State.Desync
      this.handler.onEnd(ts, false)
    }
    if (this.state !== State.Opaque) this.state = State.Desync
  }
}
