/**
 * The node's storage, behind small interfaces so a hash-ring router can send each call to a local or
 * a remote node. `LmdbStore` implements them, and so does the cluster's router; ingest goes through
 * the `BatchWriter` seam (each batch planned on arrival, then written in rounds), queries through
 * `SpanReader`. `test/StoreConformance.ts` is the suite every implementation must pass.
 */
import type { Telemetry } from "@iii/core"
import { Context, Effect, type Either, FiberRef } from "effect"
import type { StoreError, UnindexableSpan } from "./Errors.js"

type Span = Telemetry.Span
type LogRecord = Telemetry.LogRecord
type MetricPoint = Telemetry.MetricPoint
type SketchData = Telemetry.SketchData

/**
 * One agent batch as the ingest endpoint hands it to the store, or a share of one: the cluster's router
 * gives each owner set its spans, logs, points and RED parts, and a repair copies records in shares.
 */
export interface IngestBatch {
  readonly agentId: string
  /** Per-agent, strictly increasing, ≥ 1. */
  readonly seq: number
  readonly spans: ReadonlyArray<Span>
  readonly metrics: ReadonlyArray<MetricPoint>
  readonly logs: ReadonlyArray<LogRecord>
  /** A share: each log's index in the agent's batch (logs are stored under agent, seq and index). */
  readonly logIndexes?: ReadonlyArray<number>
  /** A share: each point's index in the agent's batch. */
  readonly metricIndexes?: ReadonlyArray<number>
  /** The batch's RED parts this share carries; absent: sampled from the server spans (a whole batch). */
  readonly red?: ReadonlyArray<RedPart>
  /** In a cluster: the owners of each record, for the anti-entropy digests. */
  readonly peers?: RecordOwners
}

/** The key a log is filed under and placed by: its correlation id, else its trace id, else "". */
export const logKeyOf = (log: LogRecord): string => log.correlationId ?? log.traceId ?? ""

/**
 * A batch's server spans of one service in one rollup bucket, as RED samples: applied to the rollups
 * once, under (service, bucket, agent, seq), however often it arrives.
 */
export interface RedPart {
  readonly service: string
  /** Unix seconds, a multiple of `rollupBucketSeconds`. */
  readonly bucket: number
  readonly routes: ReadonlyArray<string>
  /** Triples: route index, duration in nanoseconds, error (1 or 0). */
  readonly samples: Float64Array
}

/**
 * The nodes storing each record of a share, as indexes into `sets` (the records of a share have a
 * few owner sets). A store adds each record it stores for the first time to its digests per owner.
 */
export interface RecordOwners {
  readonly sets: ReadonlyArray<ReadonlyArray<string>>
  readonly spans: Uint16Array
  readonly logs: Uint16Array
  readonly metrics: Uint16Array
  readonly red: Uint16Array
}

/**
 * `stored`: something in it was new and is now durable. `duplicate`: every record was stored before;
 * nothing written. `unavailable`: not stored durably enough (a cluster without a write quorum for it):
 * send it again later.
 */
export type WriteOutcome = "stored" | "duplicate" | "unavailable"

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
  readonly matched: {
    readonly service: string
    readonly name: string
    readonly spanId: string
    readonly startTimeUnixNano: bigint
  }
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
  /** A plan as bytes, for another node running the same store (replication, hints). */
  encode(plan: P): Uint8Array
  /** A plan back from `encode`'s bytes. */
  decode(bytes: Uint8Array): P
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

/** A batch writer from its steps, with `write` built on them. */
export const makeBatchWriter = <P extends PlannedBatch>(
  steps: Omit<BatchWriterService<P>, "write">
): BatchWriterService<P> => ({
  plan: steps.plan,
  writeRound: steps.writeRound,
  encode: steps.encode,
  decode: steps.decode,
  write: (batches) =>
    Effect.flatMap(
      Effect.forEach(batches, (batch) => steps.plan(batch)),
      steps.writeRound
    )
})

/** The order `SpanReader.trace` returns a trace's spans in: by start time, then span id. */
export const byStart = (a: Span, b: Span): number =>
  a.startTimeUnixNano < b.startTimeUnixNano
    ? -1
    : a.startTimeUnixNano > b.startTimeUnixNano
      ? 1
      : a.spanId < b.spanId
        ? -1
        : a.spanId > b.spanId
          ? 1
          : 0

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
   * The newest span start stored (unix nanoseconds, at least to the microsecond), undefined when
   * none: read from the end of an index, not searched for, so a node can ask it at start.
   */
  readonly newestSpanStart: () => Effect.Effect<bigint | undefined, StoreError>
  /**
   * Fails once the store can no longer keep what it acknowledges (for LMDB: its data directory or
   * files were deleted or replaced under it); from then on every write fails too.
   */
  readonly check: () => Effect.Effect<void, StoreError>
}

/** A record as anti-entropy sees it: its id, the key that places it on the ring, its hash. */
export interface RecordEntry {
  /** Opaque, stable across nodes (kind and storage key). */
  readonly id: string
  /** What the ring places it by: a span's trace id, a log's correlation key, a point's agent, a RED part's service. */
  readonly routing: string
  readonly hash: number
}

/** A digest cell: the records of one minute a node stores that a peer stores too. */
export interface DigestCell {
  readonly minute: number
  readonly count: number
  readonly xor: number
  readonly sum: number
}

/** Slices a minute is listed in (`ReplicaService.records`). */
export const recordSlices = 6

/** A hint: a write kept for a node that could not take it, until it can. */
export interface Hint {
  readonly id: number
  readonly bytes: Uint8Array
}

/**
 * What a cluster needs from its node's own store besides reads and writes: hints kept durably,
 * anti-entropy digests and record listings, records exported as bytes and imported as shares, and
 * a few settings kept with the data.
 */
export interface ReplicaService {
  readonly putHint: (target: string, bytes: Uint8Array) => Effect.Effect<void, StoreError>
  /** The oldest hints for `target`, at most `limit`. */
  readonly hints: (target: string, limit: number) => Effect.Effect<ReadonlyArray<Hint>, StoreError>
  readonly deleteHints: (target: string, ids: ReadonlyArray<number>) => Effect.Effect<void, StoreError>
  /** Per target: hints kept, their bytes, and the age of the oldest (ms). */
  readonly hintStats: () => Effect.Effect<
    ReadonlyMap<string, { readonly count: number; readonly bytes: number; readonly oldestMs: number }>,
    StoreError
  >
  /** Every digest cell kept for `peer`, oldest minute first. */
  readonly digests: (peer: string) => Effect.Effect<ReadonlyArray<DigestCell>, StoreError>
  /** Replaces digest cells (after a repair or a ring change recounted them); a count of 0 removes one. */
  readonly setDigests: (peer: string, cells: ReadonlyArray<DigestCell>) => Effect.Effect<void, StoreError>
  /** The minutes holding records, oldest first. */
  readonly minutes: () => Effect.Effect<ReadonlyArray<number>, StoreError>
  /**
   * The records stored for one slice of a minute (spans by start, logs and points by time, RED parts
   * by bucket): slice `i` of `recordSlices` is seconds [10 i, 10 i + 10), so listing a busy minute
   * never holds the thread for long.
   */
  readonly records: (minute: number, slice: number) => Effect.Effect<ReadonlyArray<RecordEntry>, StoreError>
  /** Records by id, as bytes another node's `importRecords` reads; ids not stored are left out. */
  readonly exportRecords: (ids: ReadonlyArray<string>) => Effect.Effect<Uint8Array, StoreError>
  /** Exported records as shares to plan and write (their RED parts explicit, so nothing is counted twice). */
  readonly importRecords: (bytes: Uint8Array) => Effect.Effect<ReadonlyArray<IngestBatch>, StoreError>
  readonly getSetting: (name: string) => Effect.Effect<unknown, StoreError>
  readonly putSetting: (name: string, value: unknown) => Effect.Effect<void, StoreError>
}

/**
 * What a read could not reach: the nodes that did not answer, and whether the answer may miss data
 * because of them. A reader that fans out adds to the report in `currentReadReport`; the query API
 * gives each request one and adds `partial` and `missing` to its answer.
 */
export interface ReadReport {
  partial: boolean
  readonly missing: Set<string>
}

export const currentReadReport: FiberRef.FiberRef<ReadReport | undefined> = FiberRef.unsafeMake<
  ReadReport | undefined
>(undefined)

export class BatchWriter extends Context.Tag("@iii/obs/BatchWriter")<BatchWriter, BatchWriterService>() {}
export class SpanReader extends Context.Tag("@iii/obs/SpanReader")<SpanReader, SpanReaderService>() {}
export class StoreMaintenance extends Context.Tag("@iii/obs/StoreMaintenance")<
  StoreMaintenance,
  StoreMaintenanceService
>() {}
export class Replica extends Context.Tag("@iii/obs/Replica")<Replica, ReplicaService>() {}

/** All three services of one store, as a store implementation's `make` returns them. */
export interface Stores {
  readonly writer: BatchWriterService
  readonly reader: SpanReaderService
  readonly maintenance: StoreMaintenanceService
}
