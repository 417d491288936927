/**
 * OTLP out: what the node stored, forwarded to an OTLP/HTTP endpoint. The group commit hands each
 * durable round to `offer` (an in-memory append, nothing more, so acks never wait on export); one
 * fiber encodes what was offered into protobuf export requests and writes each as a file of the queue
 * directory (`{dataDir}/otlp-export`, written then renamed, so a crash leaves whole files); another
 * sends the oldest file, deleting it once the endpoint took it, and backs off on failure. The queue
 * survives restarts and is bounded in bytes: past the bound the oldest requests are dropped, counted.
 *
 * Answers: 2xx sent; 429, 502, 503, 504, a timeout or a connection failure retried after
 * `Retry-After` (429/503, up to 5 minutes) or the exponential backoff; any other status (4xx, 500,
 * 501) dropped as `rejected`, as the OTLP specification says.
 */
import { mkdirSync, readdirSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs"
import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { Errors } from "@iii/core"
import { Duration, Effect, Queue } from "effect"
import type { OtlpExportConfig } from "../../ObsNodeConfig.js"
import type { IngestBatch } from "../../Store.js"
import { logsRequest, metricsRequest, tracesRequest } from "../otlp/OtlpExportMap.js"
import { encodeRequest, type Signal } from "../otlp/OtlpProto.js"
import { labelled, line } from "./NodeCounters.js"

const signals: ReadonlyArray<Signal> = ["traces", "logs", "metrics"]

/** A queued request: its file `{seq}-{signal}-{items}.pb`. */
interface Entry {
  readonly name: string
  readonly signal: Signal
  readonly items: number
  readonly bytes: number
}

const entryOf = (name: string, bytes: number): Entry | undefined => {
  const m = /^(\d{16})-(traces|logs|metrics)-(\d+)\.pb$/.exec(name)
  return m === null ? undefined : { name, signal: m[2] as Signal, items: Number(m[3]), bytes }
}

/** What /metrics shows of the exporter. */
export class ExportCounters {
  /** Items the endpoint took, by signal. */
  readonly sent = new Map(signals.map((s) => [s, 0]))
  /** Requests sent again after a failure. */
  retried = 0
  /** Items dropped, by `signal\u0000reason` (`queue_full`, `rejected`). */
  readonly dropped = new Map(
    signals.flatMap((s) => ["queue_full", "rejected"].map((r) => [`${s}\u0000${r}`, 0]))
  )
  queuedRequests = 0
  queuedBytes = 0
}

export const renderExportCounters = (c: ExportCounters): string =>
  [
    labelled(
      "iii_obs_otlp_export_sent_total",
      "Items (spans, log records, metric points) the OTLP export endpoint took.",
      c.sent,
      ["signal"]
    ),
    line(
      "iii_obs_otlp_export_retried_total",
      "counter",
      "OTLP export requests sent again after a failure (429, 502–504, timeout, no connection).",
      c.retried
    ),
    labelled(
      "iii_obs_otlp_export_dropped_total",
      "Items dropped from the OTLP export: the queue full (oldest first) or the endpoint refusing them (rejected).",
      c.dropped,
      ["signal", "reason"]
    ),
    line(
      "iii_obs_otlp_export_queue_requests",
      "gauge",
      "OTLP export requests queued on disk.",
      c.queuedRequests
    ),
    line(
      "iii_obs_otlp_export_queue_bytes",
      "gauge",
      "Bytes of OTLP export requests queued on disk.",
      c.queuedBytes
    )
  ].join("")

/** Seconds or an HTTP date, as milliseconds from now; undefined when absent or unreadable. */
export const retryAfterMs = (header: string | null, nowMs: number): number | undefined => {
  if (header === null) return undefined
  const text = header.trim()
  if (/^\d+$/.test(text)) return Number(text) * 1000
  const at = Date.parse(text)
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs)
}

type Outcome =
  | { readonly _tag: "sent" }
  | { readonly _tag: "rejected"; readonly status: number }
  | {
      readonly _tag: "retry"
      readonly afterMs: number | undefined
      readonly reason: string
    }

/**
 * Most items in one request: rounds that queued up while the endpoint was away are not sent as one
 * body too large for it (collectors refuse a few MiB), which would be dropped whole.
 */
const maxItemsPerRequest = 2_048

const chunks = <A>(items: ReadonlyArray<A>): Array<ReadonlyArray<A>> =>
  Array.from({ length: Math.ceil(items.length / maxItemsPerRequest) }, (_, i) =>
    items.slice(i * maxItemsPerRequest, (i + 1) * maxItemsPerRequest)
  )

const retryable = new Set([429, 502, 503, 504])

export interface OtlpExporter {
  /** Queues a durable round's items for export (no I/O here). */
  readonly offer: (batches: ReadonlyArray<IngestBatch>) => void
  readonly counters: ExportCounters
}

/** Starts the exporter for the scope's lifetime; closing it writes what was offered to the queue. */
export const make = (cfg: OtlpExportConfig, dataDir: string) =>
  Effect.gen(function* () {
    const dir = join(dataDir, "otlp-export")
    mkdirSync(dir, { recursive: true })
    const counters = new ExportCounters()
    const entries: Array<Entry> = []
    let seq = 0
    for (const name of readdirSync(dir).sort()) {
      const entry = entryOf(name, statSync(join(dir, name)).size)
      if (entry === undefined) {
        // A file a crash left half written (`.tmp`): never acknowledged to the queue.
        if (name.endsWith(".tmp")) unlinkSync(join(dir, name))
        continue
      }
      entries.push(entry)
      seq = Math.max(seq, Number(name.slice(0, 16)))
      counters.queuedBytes += entry.bytes
    }
    counters.queuedRequests = entries.length

    const remove = (entry: Entry) => {
      const i = entries.indexOf(entry)
      if (i < 0) return false
      entries.splice(i, 1)
      counters.queuedRequests--
      counters.queuedBytes -= entry.bytes
      try {
        unlinkSync(join(dir, entry.name))
      } catch {
        // already gone
      }
      return true
    }
    const drop = (entry: Entry, reason: string) => {
      if (!remove(entry)) return
      const key = `${entry.signal}\u0000${reason}`
      counters.dropped.set(key, (counters.dropped.get(key) ?? 0) + entry.items)
    }

    const wake = yield* Queue.sliding<void>(1)
    const append = (signal: Signal, items: number, request: object) => {
      const bytes = encodeRequest(signal, request)
      seq++
      const entry = {
        name: `${String(seq).padStart(16, "0")}-${signal}-${items}.pb`,
        signal,
        items,
        bytes: bytes.length
      }
      writeFileSync(join(dir, `${entry.name}.tmp`), bytes)
      renameSync(join(dir, `${entry.name}.tmp`), join(dir, entry.name))
      entries.push(entry)
      counters.queuedRequests++
      counters.queuedBytes += entry.bytes
      while (counters.queuedBytes > cfg.maxQueueBytes && entries.length > 0) {
        const oldest = entries[0]
        if (oldest !== undefined) drop(oldest, "queue_full")
      }
    }

    const offered = yield* Queue.unbounded<ReadonlyArray<IngestBatch>>()
    const persist = (rounds: Iterable<ReadonlyArray<IngestBatch>>) => {
      const batches = [...rounds].flat()
      const spans = batches.flatMap((b) => b.spans)
      const logs = batches.flatMap((b) => b.logs)
      const metrics = batches.flatMap((b) => b.metrics)
      for (const part of chunks(spans)) append("traces", part.length, tracesRequest(part))
      for (const part of chunks(logs)) append("logs", part.length, logsRequest(part))
      for (const part of chunks(metrics)) append("metrics", part.length, metricsRequest(part))
      Queue.unsafeOffer(wake, undefined)
    }
    yield* Queue.take(offered).pipe(
      Effect.zip(Queue.takeAll(offered)),
      Effect.flatMap(([first, rest]) => Effect.sync(() => persist([first, ...rest]))),
      Effect.catchAllDefect((e) => Effect.logError(`OTLP export: cannot queue telemetry: ${String(e)}`)),
      Effect.forever,
      Effect.forkScoped
    )
    // Runs before the fiber above is interrupted: what was offered but not yet written is written.
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(Queue.takeAll(offered), (rest) => Effect.sync(() => persist(rest))).pipe(
        Effect.catchAllDefect((e) => Effect.logError(`OTLP export: cannot queue telemetry: ${String(e)}`))
      )
    )

    const headers = { ...Object.fromEntries(cfg.headers), "content-type": "application/x-protobuf" }
    const send = (entry: Entry): Effect.Effect<Outcome> =>
      // Interruptible: a stopping node does not wait for the endpoint.
      Effect.promise(async (interrupted): Promise<Outcome> => {
        try {
          const body = await readFile(join(dir, entry.name))
          const r = await fetch(`${cfg.url}/v1/${entry.signal}`, {
            method: "POST",
            headers,
            body,
            signal: AbortSignal.any([interrupted, AbortSignal.timeout(Duration.toMillis(cfg.requestTimeout))])
          })
          await r.arrayBuffer().catch(() => undefined)
          if (r.ok) return { _tag: "sent" }
          if (!retryable.has(r.status)) return { _tag: "rejected", status: r.status }
          const after =
            r.status === 429 || r.status === 503
              ? retryAfterMs(r.headers.get("retry-after"), Date.now())
              : undefined
          return { _tag: "retry", afterMs: after, reason: `answered ${r.status}` }
        } catch (e) {
          // A file dropped for room while being read: nothing to send.
          if ((e as NodeJS.ErrnoException).code === "ENOENT") return { _tag: "sent" }
          return { _tag: "retry", afterMs: undefined, reason: Errors.messageOf(e) }
        }
      })

    const initial = Duration.toMillis(cfg.initialBackoff)
    const max = Duration.toMillis(cfg.maxBackoff)
    const sender = Effect.gen(function* () {
      let backoff = initial
      let warned = false
      while (true) {
        const entry = entries[0]
        if (entry === undefined) {
          yield* Queue.take(wake)
          continue
        }
        const outcome = yield* send(entry)
        if (outcome._tag === "retry") {
          if (!warned) yield* Effect.logWarning(`OTLP export to ${cfg.url}: ${outcome.reason}; retrying`)
          warned = true
          const wait = Math.min(outcome.afterMs ?? backoff, outcome.afterMs === undefined ? max : 300_000)
          backoff = Math.min(backoff * 2, max)
          yield* Effect.sleep(Duration.millis(wait))
          counters.retried++
          continue
        }
        if (warned) yield* Effect.logInfo(`OTLP export to ${cfg.url}: sending again`)
        warned = false
        backoff = initial
        if (outcome._tag === "rejected") {
          yield* Effect.logWarning(
            `OTLP export to ${cfg.url}: ${entry.items} ${entry.signal} items dropped (answered ${outcome.status})`
          )
          drop(entry, "rejected")
        } else if (remove(entry))
          counters.sent.set(entry.signal, (counters.sent.get(entry.signal) ?? 0) + entry.items)
      }
    })
    yield* Effect.forkScoped(sender)

    const exporter: OtlpExporter = {
      offer: (batches) => {
        if (batches.length > 0) Queue.unsafeOffer(offered, batches)
      },
      counters
    }
    return exporter
  })
