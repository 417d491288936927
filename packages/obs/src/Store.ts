/**
 * The node's storage, behind small interfaces so a hash-ring router can send each call to a local or
 * a remote node. `LmdbStore` implements them, and so does the cluster's router; ingest goes through
 * the `BatchWriter` seam (each batch planned on arrival, then written in rounds), queries through
 * `SpanReader`. `test/StoreConformance.ts` is the suite every implementation must pass.
 */
import type { Telemetry } from "@iii/core"
import { Context, Effect, type Either } from "effect"
import type { StoreError, UnindexableSpan } from "./Errors.js"

type Span = Telemetry.Span
type LogRecord = Telemetry.LogRecord
type MetricPoint = Telemetry.MetricPoint
type SketchData = Telemetry.SketchData

/** One agent batch as the ingest endpoint hands it to the store. */
export interface IngestBatch {
  readonly agentId: string
  /** Per-agent, strictly increasing, ≥ 1. */
  readonly seq: number
  readonly spans: ReadonlyArray<Span>
  readonly metrics: ReadonlyArray<MetricPoint>
  readonly logs: ReadonlyArray<LogRecord>
}

/** `stored`: written now. `duplicate`: the agent's high-water mark already covered this seq; nothing written. */
export type WriteOutcome = "stored" | "duplicate"

/** A status filter: an HTTP status class, or `error` for spans flagged as errors whatever their status. */
export type StatusFilter = Telemetry.StatusClass | "error"

export interface TraceQuery {
  readonly service?: string
  readonly route?: string
  readonly status?: StatusFilter
  readonly minDurationNano?: number
  /** Inclusive lower bound on span start. */
  readonly sinceNano?: bigint
  /** Exclusive upper bound on span start. */
  readonly untilNano?: bigint
  readonly limit: number
  /** Opaque continuation from a previous page's `nextCursor`. */
  readonly cursor?: string
}

export interface TraceSummary {
  readonly traceId: string
  readonly correlationId: string
  /** The span that matched the query (the newest match in this trace). */
  readonly matched: { readonly service: string; readonly name: string; readonly spanId: string }
  /** The root span's service and name, or the earliest span's when the root was not captured. */
  readonly rootService: string
  readonly rootName: string
  readonly startTimeUnixNano: bigint
  /** From the earliest start to the latest end of the trace's spans. */
  readonly durationNano: number
  readonly spanCount: number
  readonly errorCount: number
  readonly services: ReadonlyArray<string>
}

export interface TracePage {
  readonly traces: ReadonlyArray<TraceSummary>
  /** Present when more traces may match; pass it back as `cursor`. */
  readonly nextCursor?: string
}

/** One RED rollup cell: every server span of (service, route) that started in a 10 s bucket. */
export interface RedCell {
  /** Unix seconds, a multiple of `rollupBucketSeconds`. */
  readonly bucketStartSec: number
  readonly route: string
  readonly count: number
  readonly errors: number
  /** Latency sketch in milliseconds (see `@iii/core/LatencySketch`). */
  readonly sketch: SketchData
}

/** Rollup bucket width. */
export const rollupBucketSeconds = 10

/** What the store knows about a service, from the spans it has seen. */
export interface ServiceInfo {
  readonly service: string
  readonly component?: string
  readonly composition?: string
  readonly namespace?: string
  readonly lastSeenUnixNano: bigint
}

export interface RetentionResult {
  readonly deletedSpans: number
  readonly deletedLogs: number
  readonly deletedMetrics: number
  readonly deletedRollups: number
}

export interface StoreStats {
  /** Bytes the LMDB environment occupies (used pages). */
  readonly bytes: number
  readonly spans: number
}

/**
 * A batch as a writer planned it: validated and encoded for its round. Each writer has a plan type of
 * its own; a round takes only plans that the same writer's `plan` made.
 */
export interface PlannedBatch {
  readonly spanCount: number
  readonly logCount: number
  readonly metricCount: number
}

/**
 * The ingest seam: a batch is planned the moment its frame is decoded (so the decoded spans die young),
 * queued, then written with others in a round (group commit). The LMDB store writes a round in one
 * durable transaction; the cluster's router sends each owner its share and waits for a quorum.
 */
export interface BatchWriterService<P extends PlannedBatch = PlannedBatch> {
  /** Plans a batch; Left when one of its spans can never be stored (the batch is refused whole). */
  plan(batch: IngestBatch): Either.Either<P, UnindexableSpan>
  /**
   * Stores a round of planned batches and succeeds only once they are durable (each plan is written
   * once: a writer may hand its buffers to another thread); a batch whose seq is ≤
   * its agent's high-water mark is skipped as `duplicate`. Outcomes are in input order.
   */
  writeRound(round: ReadonlyArray<P>): Effect.Effect<ReadonlyArray<WriteOutcome>, StoreError>
  /** `plan` then `writeRound`, all batches in one round. */
  readonly write: (
    batches: ReadonlyArray<IngestBatch>
  ) => Effect.Effect<ReadonlyArray<WriteOutcome>, StoreError | UnindexableSpan>
}

/** A batch writer from its two steps, with `write` built on them. */
export const makeBatchWriter = <P extends PlannedBatch>(
  plan: (batch: IngestBatch) => Either.Either<P, UnindexableSpan>,
  writeRound: (round: ReadonlyArray<P>) => Effect.Effect<ReadonlyArray<WriteOutcome>, StoreError>
): BatchWriterService<P> => ({
  plan,
  writeRound,
  write: (batches) =>
    Effect.flatMap(
      Effect.forEach(batches, (batch) => plan(batch)),
      writeRound
    )
})

export interface SpanReaderService {
  /** Every stored span of the trace, ordered by start time then span id; empty when the trace is unknown. */
  readonly trace: (traceId: string) => Effect.Effect<ReadonlyArray<Span>, StoreError>
  /** Traces having a span that matches every given filter, newest matching span first, one page. */
  readonly searchTraces: (query: TraceQuery) => Effect.Effect<TracePage, StoreError>
  /** Distinct trace ids carrying the correlation id, newest first, at most `limit`. */
  readonly correlatedTraceIds: (
    correlationId: string,
    limit: number
  ) => Effect.Effect<ReadonlyArray<string>, StoreError>
  /** Logs carrying the correlation id (or, lacking one, whose trace id equals it), oldest first, at most `limit`. */
  readonly logs: (correlationId: string, limit: number) => Effect.Effect<ReadonlyArray<LogRecord>, StoreError>
  /** RED cells of a service whose bucket starts in [fromSec, toSec); `route` undefined means all routes merged. */
  readonly red: (
    service: string,
    route: string | undefined,
    fromSec: number,
    toSec: number
  ) => Effect.Effect<ReadonlyArray<RedCell>, StoreError>
  /** Every service seen, sorted by name. */
  readonly services: () => Effect.Effect<ReadonlyArray<ServiceInfo>, StoreError>
}

export interface StoreMaintenanceService {
  /** Deletes everything (spans, indexes, logs, metrics, rollups) older than the cutoff, in small transactions that let ingest interleave. */
  readonly deleteOlderThan: (cutoffUnixNano: bigint) => Effect.Effect<RetentionResult, StoreError>
  /** Size figures for /metrics. */
  readonly stats: () => Effect.Effect<StoreStats, StoreError>
  /**
   * Fails once the store can no longer keep what it acknowledges (for LMDB: its data directory or
   * files were deleted or replaced under it); from then on every write fails too.
   */
  readonly check: () => Effect.Effect<void, StoreError>
}

export class BatchWriter extends Context.Tag("@iii/obs/BatchWriter")<BatchWriter, BatchWriterService>() {}
export class SpanReader extends Context.Tag("@iii/obs/SpanReader")<SpanReader, SpanReaderService>() {}
export class StoreMaintenance extends Context.Tag("@iii/obs/StoreMaintenance")<
  StoreMaintenance,
  StoreMaintenanceService
>() {}

/** All three services of one store, as a store implementation's `make` returns them. */
export interface Stores {
  readonly writer: BatchWriterService
  readonly reader: SpanReaderService
  readonly maintenance: StoreMaintenanceService
}
