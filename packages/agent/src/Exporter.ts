/**
 * The exporter: telemetry → wire-protocol batches → one or more obs nodes over WebSocket.
 *
 * - Batching: items are encoded into one batch as they come, sealed when it holds `maxBatchItems`
 *   items or `maxBatchBytes` encoded bytes, or every `flushIntervalMs`. Each batch gets the next `seq` (from 1).
 * - Several URLs: every batch goes to every URL (fan-out, e.g. two obs instances); each destination has
 *   its own connection, buffer and counters.
 * - Buffer: per destination, batches stay queued until obs acks them (after its durable commit). When
 *   the queue exceeds `maxBufferBytes` the oldest batches are dropped and counted — capture never
 *   blocks and memory never grows past the bound.
 * - Reconnect: exponential backoff with jitter (`initialBackoffMs` doubling up to `maxBackoffMs`),
 *   then every unacknowledged batch is re-sent in order; obs deduplicates by agent id + seq, so a batch
 *   whose ack was lost is stored once. The agent id is unique per agent process, so a restarted agent
 *   never collides with its previous seqs.
 */
import { hostname } from "node:os"
import type { Telemetry } from "@iii/core"
import * as TraceContext from "@iii/core/TraceContext"
import * as WireCodec from "@iii/core/WireCodec"
import type * as WireProtocol from "@iii/core/WireProtocol"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import {
  Destination,
  type DestinationCounters,
  type SealedBatch,
  zeroCounters
} from "./internal/Destination.js"

export const ingestPath = "/v1/ingest"

/** `ws://host:7070` (or `http://…`) → `ws://host:7070/v1/ingest`. */
export const ingestUrl = (base: string): string => {
  const url = new URL(base)
  if (url.protocol === "http:") url.protocol = "ws:"
  if (url.protocol === "https:") url.protocol = "wss:"
  url.pathname = `${url.pathname.replace(/\/+$/, "")}${ingestPath}`
  return url.toString()
}

/** A new agent id: host, pid and a random suffix, unique per agent process. */
export const newAgentId = (): string => `${hostname()}-${process.pid}-${TraceContext.newSpanId().slice(0, 8)}`

export interface ExporterOptions {
  /** obs base URLs, e.g. `ws://127.0.0.1:7070`; the ingest path is added. */
  readonly urls: ReadonlyArray<string>
  readonly agent: WireProtocol.Hello["agent"]
  readonly token?: string | undefined
  /** Items (spans + metrics + logs) per batch. Default 2000. */
  readonly maxBatchItems?: number
  /** Encoded bytes per batch. Default 4 MiB (obs refuses frames over 16 MiB). */
  readonly maxBatchBytes?: number
  /** A partial batch is sealed after this long. Default 1000 ms. */
  readonly flushIntervalMs?: number
  /** Unacknowledged bytes kept per destination before the oldest batches are dropped. Default 64 MiB. */
  readonly maxBufferBytes?: number
  /** First reconnect delay. Default 250 ms. */
  readonly initialBackoffMs?: number
  /** Longest reconnect delay. Default 30 s. */
  readonly maxBackoffMs?: number
  /** How long shutdown waits for outstanding acks; what is still unacknowledged then is counted as unsent. Default 3 s. */
  readonly drainTimeoutMs?: number
}

export interface ExporterStats extends DestinationCounters {
  batchesSealed: number
  spansSealed: number
  metricsSealed: number
  logsSealed: number
  bufferedBytes: number
  bufferedBatches: number
  destinations: ReadonlyArray<
    { url: string; connected: boolean; bufferedBytes: number } & DestinationCounters
  >
}

export interface ExporterService {
  span(span: Telemetry.Span): void
  log(record: Telemetry.LogRecord): void
  metric(point: Telemetry.MetricPoint): void
  /** Seals the current batch now (it is sent when a destination is connected). */
  readonly flush: Effect.Effect<void>
  /**
   * Seals the current batch and returns the seq of the last batch sealed: everything handed to the
   * exporter so far is in batches up to it (with `acknowledged`, a checkpoint).
   */
  readonly checkpoint: Effect.Effect<number>
  /**
   * The highest seq up to which every batch is done with on every destination (acknowledged by
   * obs, or counted as dropped): what was handed over before a `checkpoint` returning at most this
   * is safe, or counted.
   */
  readonly acknowledged: Effect.Effect<number>
  readonly stats: Effect.Effect<ExporterStats>
}

export class Exporter extends Context.Tag("@iii/agent/Exporter")<Exporter, ExporterService>() {}

/**
 * The batch being filled. Items are encoded as they come (`BatchEncoder`), so what waits for the seal
 * is bytes: span objects die young and cheap instead of piling up in V8's old generation.
 */
class Batcher {
  private readonly encoder = new WireCodec.BatchEncoder()
  /** The seq of the last batch sealed. */
  seq = 0
  readonly sealed = { batches: 0, spans: 0, metrics: 0, logs: 0 }
  /** The exporter stopped: whatever still comes is sealed at once (and counted unsent). */
  stopped = false

  constructor(
    private readonly maxItems: number,
    private readonly maxBytes: number,
    private readonly holders: number,
    private readonly deliver: (batch: SealedBatch) => void
  ) {}

  private added(): void {
    if (this.stopped || this.encoder.items >= this.maxItems || this.encoder.byteLength >= this.maxBytes)
      this.seal()
  }

  span(span: Telemetry.Span) {
    this.encoder.addSpan(span)
    this.added()
  }

  metric(point: Telemetry.MetricPoint) {
    this.encoder.addMetric(point)
    this.added()
  }

  log(record: Telemetry.LogRecord) {
    this.encoder.addLog(record)
    this.added()
  }

  seal(): void {
    const { spans, metrics, logs } = this.encoder
    if (spans + metrics + logs === 0) return
    const seq = ++this.seq
    const bytes = this.encoder.finish(seq)
    let holders = this.holders
    const done = () => {
      if (--holders === 0) release(bytes)
    }
    const batch: SealedBatch = { seq, bytes, spans, metrics, logs, done }
    this.sealed.batches++
    this.sealed.spans += spans
    this.sealed.metrics += metrics
    this.sealed.logs += logs
    this.deliver(batch)
  }
}

/**
 * Frees a sealed batch's memory as soon as no destination needs it. V8 frees an ArrayBuffer only when
 * a full collection finds it dead, and counts up to 64 MB of such memory before it forces one: batches
 * outlive the young generation while they wait for their ack, so at high rates tens of MB of acked
 * batches sat in RSS. Detaching the buffer (`transfer(0)`) frees it at once. Only a buffer the batch
 * owns whole is detached (a small one may be a slice of Node's shared pool), and only once every
 * destination's obs has it (`SealedBatch.done`), so no socket still holds it.
 */
const release = (bytes: Uint8Array): void => {
  const buffer = bytes.buffer
  // `transfer` is ES2024 (Node.js ≥ 21); the project's TypeScript lib predates it.
  if (buffer instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === buffer.byteLength)
    (buffer as ArrayBuffer & { transfer(length: number): ArrayBuffer }).transfer(0)
}

const sumCounters = (destinations: ReadonlyArray<Destination>): DestinationCounters => {
  const total = zeroCounters()
  for (const destination of destinations) {
    for (const key of Object.keys(total) as Array<keyof DestinationCounters>) {
      total[key] += destination.counters[key]
    }
  }
  return total
}

/** An exporter running until the scope closes; closing seals the last batch and waits briefly for acks. */
export const make = (options: ExporterOptions): Effect.Effect<ExporterService, never, Scope.Scope> =>
  Effect.gen(function* () {
    const runtime = yield* Effect.runtime<never>()
    const runLog = Runtime.runFork(runtime)
    const log = (level: "info" | "warn", message: string) => {
      runLog(level === "info" ? Effect.logInfo(message) : Effect.logWarning(message))
    }
    const hello: WireProtocol.Hello = {
      type: "hello",
      version: WireCodec.PROTOCOL_VERSION,
      agent: options.agent,
      ...(options.token === undefined ? {} : { token: options.token })
    }
    const destinations = options.urls.map(
      (base) =>
        new Destination({
          url: ingestUrl(base),
          hello,
          maxBufferBytes: options.maxBufferBytes ?? 64 * 1024 * 1024,
          initialBackoffMs: options.initialBackoffMs ?? 250,
          maxBackoffMs: options.maxBackoffMs ?? 30_000,
          log
        })
    )
    const batcher = new Batcher(
      options.maxBatchItems ?? 2000,
      options.maxBatchBytes ?? 4 * 1024 * 1024,
      destinations.length,
      (batch) => {
        for (const destination of destinations) destination.enqueue(batch)
      }
    )
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        for (const destination of destinations) destination.start()
        const timer = setInterval(() => batcher.seal(), options.flushIntervalMs ?? 1000)
        timer.unref()
        return timer
      }),
      (timer) =>
        Effect.gen(function* () {
          clearInterval(timer)
          batcher.seal()
          const deadline = Date.now() + (options.drainTimeoutMs ?? 3000)
          while (
            Date.now() < deadline &&
            // A handshake under way counts: an agent stopped just after it started (its first
            // connection still opening) delivers what it has instead of dropping it.
            destinations.some((destination) => destination.connecting && destination.bufferedBatches > 0)
          ) {
            yield* Effect.sleep("20 millis")
          }
          batcher.stopped = true
          for (const destination of destinations) {
            const before = destination.counters.batchesUnsent
            destination.stop()
            const unsent = destination.counters.batchesUnsent - before
            if (unsent > 0)
              log(
                "warn",
                `stopping: ${unsent} batches for ${destination.url} not acknowledged in time, dropped ` +
                  `(${destination.counters.spansUnsent} spans, ${destination.counters.logsUnsent} logs, ${destination.counters.metricsUnsent} metrics)`
              )
          }
        })
    )
    const stats = Effect.sync(
      (): ExporterStats => ({
        ...sumCounters(destinations),
        batchesSealed: batcher.sealed.batches,
        spansSealed: batcher.sealed.spans,
        metricsSealed: batcher.sealed.metrics,
        logsSealed: batcher.sealed.logs,
        bufferedBytes: destinations.reduce((sum, destination) => sum + destination.bufferedBytes, 0),
        bufferedBatches: destinations.reduce((sum, destination) => sum + destination.bufferedBatches, 0),
        destinations: destinations.map((destination) => ({
          url: destination.url,
          connected: destination.connected,
          bufferedBytes: destination.bufferedBytes,
          ...destination.counters
        }))
      })
    )
    return {
      span: (span) => batcher.span(span),
      log: (record) => batcher.log(record),
      metric: (point) => batcher.metric(point),
      flush: Effect.sync(() => batcher.seal()),
      checkpoint: Effect.sync(() => {
        batcher.seal()
        return batcher.seq
      }),
      acknowledged: Effect.sync(() =>
        destinations.reduce(
          (lowest, destination) => Math.min(lowest, destination.doneThrough(batcher.seq)),
          batcher.seq
        )
      ),
      stats
    } satisfies ExporterService
  })

export const layer = (options: ExporterOptions): Layer.Layer<Exporter> =>
  Layer.scoped(Exporter, make(options))
