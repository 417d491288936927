/**
 * Live tail fan-out. `publish` runs right after a commit and only queues references to each span's
 * encoding (made once per format, however many subscribers want it) in each matching subscriber's
 * bounded queue, so ingest never waits for a subscriber. On the next event-loop turn every queue is
 * flushed as one message; subscribers with the same filter share one encoded message. A subscriber
 * whose socket has more than the high-water mark unsent is skipped (retried shortly); what
 * overflows its queue is dropped and announced with a `dropped` notice before the next delivery. One
 * skipped without a break for `maxStalledMs` (a client that stopped reading) is closed.
 */
import type { Telemetry } from "@iii/core"
import { Packr } from "msgpackr"
import type { TailFilter } from "./Params.js"

/** What the hub needs from a subscriber's socket. */
export interface TailSink {
  /** Sends one message: a text frame when `binary` is false. The same buffer may go to many sinks. */
  readonly send: (data: Uint8Array, binary: boolean) => void
  /** Bytes queued in the socket not yet written to the kernel. */
  readonly bufferedAmount: () => number
  /** Ends the subscription from the node's side (the subscriber stalled). */
  readonly close: () => void
}

export interface TailLimits {
  /** Spans a subscriber may have waiting; beyond it new spans are dropped. */
  readonly maxQueuedSpans: number
  /** Socket bytes above which the subscriber is considered slow and not sent to. */
  readonly maxBufferedBytes: number
  /** Milliseconds a subscriber may stay above `maxBufferedBytes` without a break before it is closed. */
  readonly maxStalledMs: number
}

export const defaultTailLimits: TailLimits = {
  maxQueuedSpans: 10_000,
  maxBufferedBytes: 4 * 1024 * 1024,
  maxStalledMs: 30_000
}

/** Messages sent to tail subscribers, as JSON text frames or MessagePack binary frames. */
export type TailMessage =
  | {
      readonly type: "spans"
      /** Unix milliseconds (fractional) when the commit that made these spans durable completed. */
      readonly committedAt: number
      readonly count: number
      readonly spans: ReadonlyArray<Telemetry.Span>
    }
  | {
      readonly type: "dropped"
      readonly dropped: number
      readonly totalDropped: number
      readonly reason: string
    }

const packr = new Packr({ useRecords: false })

/** JSON with bigints as decimal strings (as OTLP/JSON renders 64-bit integers). */
export const toJson = (value: unknown): string =>
  JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v))

/**
 * `toJson` for a span, without a replacer (several times faster) when its only bigint is the start
 * time; events (OTLP spans') carry bigint times too, so a span with any takes `toJson`.
 */
const spanJson = (span: Telemetry.Span | undefined): string =>
  span === undefined
    ? "null"
    : span.events !== undefined && span.events.length > 0
      ? toJson(span)
      : JSON.stringify({ ...span, startTimeUnixNano: span.startTimeUnixNano.toString() })

const encodeNotice = (message: TailMessage, format: TailFilter["format"]): Uint8Array =>
  format === "json" ? Buffer.from(toJson(message)) : packr.pack(message)

export const spanMatches = (f: TailFilter, s: Telemetry.Span): boolean => {
  if (f.service !== undefined && s.service !== f.service) return false
  if (f.minDurationNano !== undefined && s.durationNano < f.minDurationNano) return false
  if (f.route !== undefined && (s.http?.route ?? s.name) !== f.route) return false
  if (f.status !== undefined) {
    if (f.status === "error") return s.error
    const code = s.http?.statusCode
    const cls = code === undefined || code < 100 || code > 599 ? "none" : `${Math.floor(code / 100)}xx`
    if (cls !== f.status) return false
  }
  return true
}

type Encoded = string | Uint8Array

/** Encodes each span of one publish at most once per format, however many subscribers it goes to. */
class EncodedSpans {
  private readonly json: Array<string | undefined> = []
  private readonly packed: Array<Uint8Array | undefined> = []
  readonly spans: ReadonlyArray<Telemetry.Span>

  constructor(spans: ReadonlyArray<Telemetry.Span>) {
    this.spans = spans
  }

  get(i: number, format: TailFilter["format"]): Encoded {
    const cache = format === "json" ? this.json : this.packed
    let encoded = cache[i]
    if (encoded === undefined) {
      const span = this.spans[i]
      encoded = format === "json" ? spanJson(span) : packr.pack(span)
      cache[i] = encoded
    }
    return encoded
  }
}

const msgpackArrayHeader = (n: number): Uint8Array => {
  if (n < 16) return Uint8Array.of(0x90 | n)
  const header = Buffer.alloc(n < 65_536 ? 3 : 5)
  if (n < 65_536) {
    header[0] = 0xdc
    header.writeUInt16BE(n, 1)
  } else {
    header[0] = 0xdd
    header.writeUInt32BE(n, 1)
  }
  return header
}

/** A `spans` message from already-encoded spans: JSON text, or a MessagePack map built around them. */
const spansMessage = (committedAt: number, encoded: ReadonlyArray<Encoded>, format: TailFilter["format"]) =>
  format === "json"
    ? Buffer.from(
        `{"type":"spans","committedAt":${committedAt},"count":${encoded.length},"spans":[${encoded.join(",")}]}`
      )
    : Buffer.concat([
        Uint8Array.of(0x84),
        packr.pack("type"),
        packr.pack("spans"),
        packr.pack("committedAt"),
        packr.pack(committedAt),
        packr.pack("count"),
        packr.pack(encoded.length),
        packr.pack("spans"),
        msgpackArrayHeader(encoded.length),
        ...(encoded as ReadonlyArray<Uint8Array>)
      ])

class Subscriber {
  queue: Array<Encoded> = []
  committedAt = 0
  pendingDropped = 0
  totalDropped = 0
  /** Skipped at a flush (socket too full): its queue no longer matches others with the same filter. */
  backlogged = false
  /** When the current run of skipped flushes began (performance.now()). */
  stalledSince: number | undefined
  readonly filter: TailFilter
  readonly filterKey: string
  readonly sink: TailSink

  constructor(filter: TailFilter, sink: TailSink) {
    this.filter = filter
    this.filterKey = JSON.stringify(filter)
    this.sink = sink
  }
}

export class TailHub {
  private readonly subscribers = new Set<Subscriber>()
  private scheduled = false
  private retry: NodeJS.Timeout | undefined
  /** Spans dropped across all subscribers since start. */
  droppedTotal = 0
  deliveredTotal = 0

  private readonly limits: TailLimits

  constructor(limits: TailLimits = defaultTailLimits) {
    this.limits = limits
  }

  get size(): number {
    return this.subscribers.size
  }

  /** Registers a subscriber; the returned function unregisters it. */
  subscribe(filter: TailFilter, sink: TailSink): () => void {
    const sub = new Subscriber(filter, sink)
    this.subscribers.add(sub)
    return () => {
      this.subscribers.delete(sub)
    }
  }

  /** Called after a commit with the spans it made durable. Never blocks on subscribers. */
  publish(spans: ReadonlyArray<Telemetry.Span>, committedAt: number): void {
    if (this.subscribers.size === 0) return
    const encoded = new EncodedSpans(spans)
    let any = false
    for (const sub of this.subscribers) {
      for (let i = 0; i < spans.length; i++) {
        const span = spans[i]
        if (span === undefined || !spanMatches(sub.filter, span)) continue
        any = true
        if (sub.queue.length < this.limits.maxQueuedSpans) {
          sub.queue.push(encoded.get(i, sub.filter.format))
          sub.committedAt = committedAt
        } else {
          sub.pendingDropped++
          sub.totalDropped++
          this.droppedTotal++
        }
      }
    }
    if (any) this.schedule()
  }

  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(() => this.flush())
  }

  private flush(): void {
    this.scheduled = false
    const shared = new Map<string, Uint8Array>()
    let skipped = false
    const now = performance.now()
    for (const sub of this.subscribers) {
      if (sub.queue.length === 0 && sub.pendingDropped === 0) continue
      if (sub.sink.bufferedAmount() > this.limits.maxBufferedBytes) {
        sub.stalledSince ??= now
        if (now - sub.stalledSince >= this.limits.maxStalledMs) {
          this.subscribers.delete(sub)
          sub.sink.close()
          continue
        }
        // Slow subscriber: keep its (bounded) queue and retry shortly; publish drops the overflow.
        sub.backlogged = true
        skipped = true
        continue
      }
      sub.stalledSince = undefined
      const binary = sub.filter.format === "msgpack"
      if (sub.pendingDropped > 0) {
        const notice = encodeNotice(
          {
            type: "dropped",
            dropped: sub.pendingDropped,
            totalDropped: sub.totalDropped,
            reason: "subscriber too slow: spans dropped to protect ingest"
          },
          sub.filter.format
        )
        sub.sink.send(notice, binary)
        sub.pendingDropped = 0
      }
      if (sub.queue.length > 0) {
        // Subscribers with the same filter, none of them carrying a backlog, queued the same spans.
        const key = sub.backlogged ? undefined : sub.filterKey
        let message = key === undefined ? undefined : shared.get(key)
        if (message === undefined) {
          message = spansMessage(sub.committedAt, sub.queue, sub.filter.format)
          if (key !== undefined) shared.set(key, message)
        }
        this.deliveredTotal += sub.queue.length
        sub.queue = []
        sub.sink.send(message, binary)
      }
      sub.backlogged = false
    }
    if (skipped && this.retry === undefined)
      this.retry = setTimeout(() => {
        this.retry = undefined
        this.flush()
      }, 20).unref()
  }
}
