/**
 * One obs node the exporter streams to: a WebSocket connection with its own queue of unacknowledged
 * batches, bounded in bytes (oldest dropped first), re-sent in order after every reconnect.
 */

import * as WireCodec from "@iii/core/WireCodec"
import type * as WireProtocol from "@iii/core/WireProtocol"
import * as Either from "effect/Either"
import WebSocket from "ws"

/** A sealed, encoded batch; shared by every destination. */
export interface SealedBatch {
  readonly seq: number
  readonly bytes: Uint8Array
  readonly spans: number
  readonly metrics: number
  readonly logs: number
  /**
   * Called by each destination once obs has the batch (acknowledged or rejected): nothing will send
   * these bytes again. Not called for a batch dropped from a full buffer, which may still be queued
   * in a socket.
   */
  readonly done: () => void
}

export interface DestinationCounters {
  /** Batch frames written to a socket, including re-sends. */
  batchesSent: number
  /** Batches written again after a reconnect (or an `overloaded` error). */
  batchesResent: number
  batchesAcked: number
  /** Dropped unacknowledged because the buffer was full. */
  batchesDropped: number
  spansDropped: number
  metricsDropped: number
  logsDropped: number
  /** Refused by obs as invalid (re-sending would not help), and what they held. */
  batchesRejected: number
  spansRejected: number
  metricsRejected: number
  logsRejected: number
  /**
   * Still unacknowledged when the exporter stopped (obs unreachable or too slow at shutdown), or
   * handed to the exporter after it stopped.
   */
  batchesUnsent: number
  spansUnsent: number
  metricsUnsent: number
  logsUnsent: number
  /** Successful handshakes (hello → welcome). */
  connects: number
  /** Connections lost or refused. */
  disconnects: number
}

export interface DestinationOptions {
  readonly url: string
  readonly hello: WireProtocol.Hello
  readonly maxBufferBytes: number
  readonly initialBackoffMs: number
  readonly maxBackoffMs: number
  readonly log: (level: "info" | "warn", message: string) => void
}

/** Errors that mean this batch will never be accepted: drop it rather than retry forever. */
const permanentBatchErrors = new Set<WireProtocol.WireErrorCode>(["invalid_batch", "oversize", "malformed"])

/** Every counter at zero. */
export const zeroCounters = (): DestinationCounters => ({
  batchesSent: 0,
  batchesResent: 0,
  batchesAcked: 0,
  batchesDropped: 0,
  spansDropped: 0,
  metricsDropped: 0,
  logsDropped: 0,
  batchesRejected: 0,
  spansRejected: 0,
  metricsRejected: 0,
  logsRejected: 0,
  batchesUnsent: 0,
  spansUnsent: 0,
  metricsUnsent: 0,
  logsUnsent: 0,
  connects: 0,
  disconnects: 0
})

export class Destination {
  readonly counters: DestinationCounters = zeroCounters()
  /** Unacknowledged batches by seq, oldest first (Map keeps insertion order). */
  private readonly queue = new Map<number, SealedBatch>()
  /** Seqs written on the current connection. */
  private sentOnSocket = new Set<number>()
  /** Seqs written at least once on any connection (to count re-sends). */
  private readonly everSent = new Set<number>()
  private bytes = 0
  private socket: WebSocket | undefined
  private ready = false
  private attempt = 0
  private reconnectTimer: NodeJS.Timeout | undefined
  private stopped = false
  private lastError = ""

  constructor(private readonly options: DestinationOptions) {}

  get bufferedBytes(): number {
    return this.bytes
  }

  get bufferedBatches(): number {
    return this.queue.size
  }

  /** The highest seq (at most `last`, the last sealed) up to which no batch waits here. */
  doneThrough(last: number): number {
    const oldest = this.queue.keys().next()
    return oldest.done === true ? last : oldest.value - 1
  }

  get connected(): boolean {
    return this.ready
  }

  /** Connected, or a connection's handshake under way (not waiting out a backoff after a failure). */
  get connecting(): boolean {
    return this.ready || (this.socket !== undefined && !this.stopped)
  }

  get url(): string {
    return this.options.url
  }

  start(): void {
    this.connect()
  }

  enqueue(batch: SealedBatch): void {
    if (this.stopped) {
      // Telemetry that arrived after the exporter stopped: counted, never sent.
      this.countUnsent(batch)
      batch.done()
      return
    }
    this.queue.set(batch.seq, batch)
    this.bytes += batch.bytes.byteLength
    // Drop the oldest until the buffer fits again; the newest batch always stays.
    while (this.bytes > this.options.maxBufferBytes && this.queue.size > 1) {
      const oldest = this.queue.values().next()
      if (oldest.done === true) break
      this.remove(oldest.value.seq)
      this.counters.batchesDropped++
      this.counters.spansDropped += oldest.value.spans
      this.counters.metricsDropped += oldest.value.metrics
      this.counters.logsDropped += oldest.value.logs
    }
    if (this.ready) this.send(batch)
  }

  /** Closes the connection; batches still unacknowledged are counted as unsent. */
  stop(): void {
    for (const batch of this.queue.values()) this.countUnsent(batch)
    this.queue.clear()
    this.bytes = 0
    this.stopped = true
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer)
    this.socket?.terminate()
    this.socket = undefined
    this.ready = false
  }

  private countUnsent(batch: SealedBatch): void {
    this.counters.batchesUnsent++
    this.counters.spansUnsent += batch.spans
    this.counters.metricsUnsent += batch.metrics
    this.counters.logsUnsent += batch.logs
  }

  private remove(seq: number): void {
    const batch = this.queue.get(seq)
    if (batch === undefined) return
    this.queue.delete(seq)
    this.sentOnSocket.delete(seq)
    this.everSent.delete(seq)
    this.bytes -= batch.bytes.byteLength
  }

  private send(batch: SealedBatch): void {
    const socket = this.socket
    if (socket === undefined || socket.readyState !== WebSocket.OPEN || this.sentOnSocket.has(batch.seq))
      return
    socket.send(batch.bytes, { binary: true })
    this.sentOnSocket.add(batch.seq)
    this.counters.batchesSent++
    if (this.everSent.has(batch.seq)) this.counters.batchesResent++
    else this.everSent.add(batch.seq)
  }

  private connect(): void {
    if (this.stopped) return
    this.ready = false
    this.sentOnSocket = new Set()
    const token = this.options.hello.token
    // obs checks the token on the upgrade (401 before any WebSocket); hello carries it too for older nodes.
    const socket = new WebSocket(this.options.url, {
      maxPayload: WireCodec.defaultMaxFrameBytes,
      ...(token !== undefined && { headers: { authorization: `Bearer ${token}` } })
    })
    this.socket = socket
    socket.binaryType = "nodebuffer"
    socket.on("open", () => {
      socket.send(WireCodec.encodeFrame(this.options.hello), { binary: true })
    })
    socket.on("message", (data: Buffer, isBinary: boolean) => {
      if (socket !== this.socket) return
      if (!isBinary) return this.fail(socket, "obs sent a text frame")
      const decoded = WireCodec.decodeFrame(data)
      if (Either.isLeft(decoded))
        return this.fail(socket, `undecodable frame from obs: ${decoded.left.message}`)
      this.onFrame(socket, decoded.right)
    })
    socket.on("error", (error) => {
      this.lastError = error.message
    })
    socket.on("close", (code, reason) => {
      if (socket !== this.socket) return
      this.socket = undefined
      const wasReady = this.ready
      this.ready = false
      this.counters.disconnects++
      if (this.stopped) return
      const why = this.lastError || `closed (${code}${reason.length > 0 ? ` ${reason.toString()}` : ""})`
      if (wasReady || this.attempt === 0)
        this.options.log("warn", `obs ${this.options.url} unreachable: ${why}`)
      this.lastError = ""
      this.scheduleReconnect()
    })
  }

  private onFrame(socket: WebSocket, frame: WireProtocol.Frame): void {
    switch (frame.type) {
      case "welcome": {
        this.ready = true
        this.attempt = 0
        this.counters.connects++
        this.options.log(
          "info",
          `connected to obs ${this.options.url} (node ${frame.node}), ${this.queue.size} batches to send`
        )
        for (const batch of this.queue.values()) this.send(batch)
        return
      }
      case "ack": {
        const batch = this.queue.get(frame.seq)
        if (batch !== undefined) {
          this.remove(frame.seq)
          this.counters.batchesAcked++
          batch.done()
        }
        return
      }
      case "error": {
        if (frame.seq !== undefined && permanentBatchErrors.has(frame.code)) {
          const batch = this.queue.get(frame.seq)
          if (batch !== undefined) {
            this.remove(frame.seq)
            this.counters.batchesRejected++
            this.counters.spansRejected += batch.spans
            this.counters.metricsRejected += batch.metrics
            this.counters.logsRejected += batch.logs
            batch.done()
          }
          this.options.log("warn", `obs rejected batch ${frame.seq}: ${frame.code}: ${frame.message}`)
        } else if (frame.seq !== undefined && (frame.code === "overloaded" || frame.code === "internal")) {
          // Not stored: send it again after a pause, on this connection if it still stands.
          const seq = frame.seq
          this.sentOnSocket.delete(seq)
          setTimeout(() => {
            const batch = this.queue.get(seq)
            if (batch !== undefined && this.ready && socket === this.socket) this.send(batch)
          }, this.options.initialBackoffMs).unref()
        }
        if (frame.fatal) {
          this.lastError = `${frame.code}: ${frame.message}`
          socket.close(1000)
        }
        return
      }
      default:
        this.fail(socket, `unexpected ${frame.type} frame from obs`)
    }
  }

  private fail(socket: WebSocket, why: string): void {
    this.lastError = why
    socket.terminate()
  }

  private scheduleReconnect(): void {
    // Exponential backoff with jitter: a random delay in [½, 1] × min(max, initial × 2^attempt).
    const ceiling = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** this.attempt)
    const delay = ceiling / 2 + Math.random() * (ceiling / 2)
    this.attempt = Math.min(this.attempt + 1, 30)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      this.connect()
    }, delay)
    this.reconnectTimer.unref()
  }
}
