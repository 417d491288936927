/**
 * What OTLP/HTTP and OTLP/gRPC share once a request's bytes are in: decode, map (`internal/otlp/`),
 * leave out the items outside the ingest window, and write the rest through the same group commit
 * as agent batches, so a request is answered after the durable commit. Items left out are reported
 * as a partial success; a request refused whole (undecodable, back-pressure, store lost) stores
 * nothing.
 *
 * A request becomes one batch of a pseudo-agent named after a hash of its signal and (inflated)
 * body, sequence 1: spans are stored once by trace and span id, logs, metric points and RED parts
 * once per (agent, seq, index), so a retried request (same body) stores nothing twice.
 */
import { createHash } from "node:crypto"
import type { Telemetry } from "@iii/core"
import { Errors } from "@iii/core"
import { Either } from "effect"
import { UnindexableSpan } from "../../Errors.js"
import type { IngestBatch, WriteOutcome } from "../../Store.js"
import { type Mapped, mapLogs, mapMetrics, mapTraces, type Rejections } from "../otlp/OtlpMap.js"
import * as Proto from "../otlp/OtlpProto.js"
import type { BatchQueue } from "./GroupCommit.js"
import type { Dated } from "./IngestWindow.js"
import type { NodeCounters } from "./NodeCounters.js"

export interface OtlpParts {
  /** Largest request body, as received and as inflated, in bytes. */
  readonly maxBodyBytes: number
  /** Why items do not fit the ingest window (`IngestWindow`), or undefined when they do. */
  readonly misfit: (batch: Dated) => string | undefined
  readonly writer: BatchQueue
  /** Why the store can no longer keep what it acknowledges, once that happened. */
  readonly storeFailure: () => string | undefined
  readonly nowMs: () => number
  readonly logError: (message: string) => void
  readonly counters: NodeCounters
  /** Token every request must carry; undefined: open. */
  readonly token: string | undefined
}

/**
 * Why a request was refused whole: `overloaded` (write queue full), `storeLost` (the store keeps
 * nothing more), `unavailable` (no write quorum), `failed` (the commit failed), `undecodable`.
 */
export type Refusal = "overloaded" | "storeLost" | "unavailable" | "failed" | "undecodable"

export interface Refused {
  readonly _tag: "Refused"
  readonly refusal: Refusal
  readonly message: string
}

export type Outcome = { readonly _tag: "Stored"; readonly response: Uint8Array } | Refused

const refused = (refusal: Refusal, message: string): Refused => ({ _tag: "Refused", refusal, message })

/** Whether the node takes a request now, checked before its body is read: undefined when it does. */
export const admission = (parts: OtlpParts): Refused | undefined => {
  const failure = parts.storeFailure()
  if (failure !== undefined) return refused("storeLost", `this node stores nothing more: ${failure}`)
  if (parts.writer.full) return refused("overloaded", "the node's write queue is full; retry later")
  return undefined
}

interface Prepared {
  readonly batch: IngestBatch
  readonly rejections: Rejections
}

/** Leaves out the items outside the ingest window, one by one (only when the batch as a whole misfits). */
const withinWindow = <A>(
  mapped: Mapped<A>,
  dated: (items: ReadonlyArray<A>) => Dated,
  misfit: OtlpParts["misfit"]
): Mapped<A> => {
  if (misfit(dated(mapped.items)) === undefined) return mapped
  const out: Mapped<A> = { items: [], indexes: [], rejections: mapped.rejections }
  mapped.items.forEach((item, i) => {
    const why = misfit(dated([item]))
    if (why === undefined) {
      out.items.push(item)
      out.indexes.push(mapped.indexes[i] ?? i)
    } else out.rejections.add(why.replace(/^\w+\[0\]/, (m) => m.replace("[0]", "")))
  })
  return out
}

const none = { spans: [], logs: [], metrics: [] }

/** The request as one batch (see the module doc), its items mapped and windowed. */
const prepare = <S extends Proto.Signal>(
  signal: S,
  request: Proto.Requests[S],
  body: Uint8Array,
  parts: OtlpParts
): Prepared => {
  const agentId = `otlp-${createHash("sha256").update(signal).update(body).digest("hex").slice(0, 32)}`
  const base = { agentId, seq: 1, ...none }
  switch (signal) {
    case "traces": {
      const m = withinWindow(
        mapTraces(request as Proto.TracesRequest),
        (spans) => ({ ...none, spans }),
        parts.misfit
      )
      return { batch: { ...base, spans: m.items }, rejections: m.rejections }
    }
    case "logs": {
      const mapped = mapLogs(request as Proto.LogsRequest, BigInt(parts.nowMs()) * 1_000_000n)
      const m = withinWindow(mapped, (logs) => ({ ...none, logs }), parts.misfit)
      return { batch: { ...base, logs: m.items, logIndexes: m.indexes }, rejections: m.rejections }
    }
    default: {
      const m = withinWindow(
        mapMetrics(request as Proto.MetricsRequest),
        (metrics) => ({ ...none, metrics }),
        parts.misfit
      )
      return { batch: { ...base, metrics: m.items, metricIndexes: m.indexes }, rejections: m.rejections }
    }
  }
}

/**
 * Queues the batch; a span the store cannot index is left out (and counted) and the rest queued
 * again, so one span with an oversized service name does not cost the others.
 */
const queue = (writer: BatchQueue, batch: IngestBatch, rejections: Rejections): Promise<WriteOutcome> => {
  for (;;) {
    let queued: Either.Either<Promise<WriteOutcome>, unknown>
    try {
      queued = writer.queueBatch(batch)
    } catch (error) {
      return Promise.reject(error)
    }
    if (Either.isRight(queued)) return queued.right
    const error = queued.left
    const at = error instanceof UnindexableSpan ? /^spans\[(\d+)\]/.exec(error.path) : null
    if (at === null || !(error instanceof UnindexableSpan)) return Promise.reject(error)
    const index = Number(at[1])
    rejections.add(
      error.message.replace(/^spans\[\d+\]/, `span ${(batch.spans[index] as Telemetry.Span).spanId}`)
    )
    batch = { ...batch, spans: batch.spans.filter((_, i) => i !== index) }
  }
}

/**
 * Decodes, maps and queues one export request: refused, or its commit (none when nothing is left to
 * store) and the items left out. Synchronous, so that neither the decoded request nor the mapped
 * items are held while the commit is awaited: planned on arrival, they die young, as an agent batch's
 * spans do, instead of living until the commit and being promoted to V8's old generation (which cost
 * more CPU than decoding them).
 */
const enqueue = (
  signal: Proto.Signal,
  format: Proto.Format,
  body: Uint8Array,
  parts: OtlpParts
): Refused | { readonly commit: Promise<WriteOutcome> | undefined; readonly rejections: Rejections } => {
  const decoded = Proto.decodeRequest(signal, format, body)
  if (Either.isLeft(decoded)) return refused("undecodable", decoded.left)
  const { batch, rejections } = prepare(signal, decoded.right, body, parts)
  const items = batch.spans.length + batch.logs.length + batch.metrics.length
  return { commit: items > 0 ? queue(parts.writer, batch, rejections) : undefined, rejections }
}

/** Decodes, maps and stores one export request; the response is encoded in `format`. */
export const ingest = async (
  signal: Proto.Signal,
  format: Proto.Format,
  body: Uint8Array,
  parts: OtlpParts
): Promise<Outcome> => {
  const queued = enqueue(signal, format, body, parts)
  if ("_tag" in queued) return queued
  const { commit, rejections } = queued
  if (commit !== undefined) {
    let outcome: WriteOutcome
    try {
      outcome = await commit
    } catch (error) {
      const message = Errors.messageOf(error)
      parts.logError(`OTLP ${signal} request not stored: ${message}`)
      return refused("failed", `not stored (${message}); retry`)
    }
    if (outcome === "unavailable")
      return refused(
        "unavailable",
        "not stored: too few of its owners are reachable for a write quorum; retry"
      )
  }
  parts.counters.otlpLeftOut(signal, rejections.count)
  return {
    _tag: "Stored",
    response: Proto.encodeResponse(
      signal,
      format,
      rejections.count === 0 ? undefined : { count: rejections.count, message: rejections.message() }
    )
  }
}
