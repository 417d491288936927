/**
 * Live tail fan-out. `publish` runs right after a commit and only copies matching spans into each
 * subscriber's bounded queue, so ingest never waits for a subscriber. Queues are flushed on the next
 * event-loop turn as one message per subscriber; a subscriber whose socket buffer is above the
 * high-water mark is not sent to, and what overflows its queue is dropped and announced with a
 * `dropped` notice before the next delivery.
 */
import type { Telemetry } from "@iii/core"
import { Packr } from "msgpackr"
import type { TailFilter } from "./Params.js"

/** What the hub needs from a subscriber's socket. */
export interface TailSink {
  readonly send: (data: string | Uint8Array) => void
  /** Bytes queued in the socket not yet written to the kernel. */
  readonly bufferedAmount: () => number
}

export interface TailLimits {
  /** Spans a subscriber may have waiting; beyond it new spans are dropped. */
  readonly maxQueuedSpans: number
  /** Socket bytes above which the subscriber is considered slow and not sent to. */
  readonly maxBufferedBytes: number
}

export const defaultTailLimits: TailLimits = { maxQueuedSpans: 10_000, maxBufferedBytes: 4 * 1024 * 1024 }

/** Messages sent to tail subscribers, as JSON text frames or MessagePack binary frames. */
export type TailMessage =
  | { readonly type: "spans"; readonly committedAt: number; readonly spans: ReadonlyArray<Telemetry.Span> }
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

export const encodeTailMessage = (message: TailMessage, format: TailFilter["format"]): string | Uint8Array =>
  format === "json" ? toJson(message) : packr.pack(message)

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

class Subscriber {
  queue: Array<Telemetry.Span> = []
  committedAt = 0
  pendingDropped = 0
  totalDropped = 0
  scheduled = false
  readonly filter: TailFilter
  readonly sink: TailSink

  constructor(filter: TailFilter, sink: TailSink) {
    this.filter = filter
    this.sink = sink
  }
}

export class TailHub {
  private readonly subscribers = new Set<Subscriber>()
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
    for (const sub of this.subscribers) {
      let added = false
      for (const span of spans) {
        if (!spanMatches(sub.filter, span)) continue
        if (sub.queue.length < this.limits.maxQueuedSpans) {
          sub.queue.push(span)
          added = true
        } else {
          sub.pendingDropped++
          sub.totalDropped++
          this.droppedTotal++
        }
      }
      if (added) sub.committedAt = committedAt
      if ((added || sub.pendingDropped > 0) && !sub.scheduled) {
        sub.scheduled = true
        setImmediate(() => this.flush(sub))
      }
    }
  }

  private flush(sub: Subscriber): void {
    sub.scheduled = false
    if (!this.subscribers.has(sub)) return
    if (sub.sink.bufferedAmount() > this.limits.maxBufferedBytes) {
      // Slow subscriber: keep its (bounded) queue and retry shortly; publish keeps dropping overflow.
      sub.scheduled = true
      setTimeout(() => this.flush(sub), 20).unref()
      return
    }
    if (sub.pendingDropped > 0) {
      sub.sink.send(
        encodeTailMessage(
          {
            type: "dropped",
            dropped: sub.pendingDropped,
            totalDropped: sub.totalDropped,
            reason: "subscriber too slow: spans dropped to protect ingest"
          },
          sub.filter.format
        )
      )
      sub.pendingDropped = 0
    }
    if (sub.queue.length > 0) {
      const spans = sub.queue
      sub.queue = []
      this.deliveredTotal += spans.length
      sub.sink.send(
        encodeTailMessage({ type: "spans", committedAt: sub.committedAt, spans }, sub.filter.format)
      )
    }
  }
}
