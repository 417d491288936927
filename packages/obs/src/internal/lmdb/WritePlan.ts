/**
 * An ingest batch turned into what LMDB stores, before the write transaction: every span record and
 * index entry as encoded key and value bytes in one buffer, RED samples and service sightings
 * pre-aggregated. Built on the ingest thread as soon as a frame is decoded, so the decoded spans die
 * young (a span object kept until its commit outlives the young generation and makes the collector
 * copy and promote it); then handed to the writer (thread) by transferring the buffers, so the
 * writer's transaction only copies bytes into LMDB. The writer decides per span, inside the
 * transaction, whether it is new (LmdbWrite.ts).
 */
import { Msgpack, Telemetry } from "@iii/core"
// lmdb turns on ordered-binary's null termination when loaded; keys written here must match its own.
import "lmdb"
import type { Effect } from "effect"
import { writeKey } from "ordered-binary"
import { type StoreError, UnindexableSpan } from "../../Errors.js"
import type { IngestBatch, PlannedBatch, RecordOwners, RedPart, WriteOutcome } from "../../Store.js"
import { RedSampler, routeOf } from "../RedParts.js"
import {
  blockFields,
  correlationKey,
  digestMinute,
  durationBand,
  idTimeBucket,
  maxLabelBytes,
  micros,
  plannedDbs,
  type ServiceBlockKey,
  type ServiceInfoValue,
  type StatusBlockKey,
  serviceBucket,
  spanKeyBucketOf,
  statusBlockFields,
  statusIndexed,
  traceIndexKeyBytes,
  writeTraceIndexKey
} from "./Keys.js"
import * as SpanRecord from "./SpanRecord.js"

const SPANS = plannedDbs.indexOf("spans")
const TRACE_INDEX = plannedDbs.indexOf("traceIndex")
const BY_SERVICE = plannedDbs.indexOf("byService")
const BY_STATUS = plannedDbs.indexOf("byStatus")
const BY_CORRELATION = plannedDbs.indexOf("byCorrelation")

/**
 * What a plan is made of: an agent batch, or a share of one (the cluster plans each owner set's share),
 * or records a repair copies. Logs and metric points are stored under (agent, seq, their index in the
 * agent's batch): a share gives each one's index, a whole batch leaves them implied.
 */
type PlanInput = IngestBatch

export interface BatchPlan extends PlannedBatch {
  readonly agentId: string
  readonly seq: number
  /** Three numbers per entry: database index (see `plannedDbs`), key length, value length. */
  readonly table: Uint32Array
  /** Each entry's key bytes then value bytes, entries in table order. */
  readonly bytes: Uint8Array
  /** RED parts of the batch's server spans. */
  readonly red: ReadonlyArray<RedPart>
  /** Per service in the batch: its latest resource labels and newest span start. */
  readonly services: ReadonlyArray<readonly [string, ServiceInfoValue]>
  readonly logs: ReadonlyArray<Telemetry.LogRecord>
  readonly logIndexes: ReadonlyArray<number> | undefined
  readonly metrics: ReadonlyArray<Telemetry.MetricPoint>
  readonly metricIndexes: ReadonlyArray<number> | undefined
  readonly peers: RecordOwners | undefined
  /** With `peers`: each span's start minute (`Keys.digestMinute`), for its digest cell. */
  readonly spanMinutes: Uint32Array | undefined
}

type KeyPart = string | number

/**
 * The plan's buffers while it is built: entries (key, then value written by the caller) appended to
 * the writer's bytes, their lengths to the table; each in an ArrayBuffer of its own (so it can be
 * transferred). Index values are plain MessagePack arrays, as lmdb's msgpack encoding of those
 * databases reads them.
 */
class Builder extends Msgpack.Writer {
  table: Uint32Array
  count = 0
  private keyStart = 0
  private valueStart = 0

  constructor(spans: number) {
    super(spans * 320)
    this.table = new Uint32Array(Math.max(64, spans * 3 * 3))
  }

  /** Writes an entry's key; its value is what gets written until `endEntry`. */
  beginEntry(key: ReadonlyArray<KeyPart>): void {
    let bound = 16
    for (const part of key) bound += typeof part === "string" ? part.length * 3 + 2 : 12
    this.room(bound)
    this.keyStart = this.position
    this.position = this.valueStart = writeKey(key as Array<KeyPart>, this.bytes, this.position)
  }

  /**
   * `beginEntry(spanKey(span))` without ordered-binary's character loop: hex ids are plain ASCII that
   * needs no escape, so the key is the bucket's number, then the two ids, each after a 0 byte (the
   * test holds this to writeKey).
   */
  beginSpanEntry(span: Telemetry.Span, bucket: number): void {
    const { traceId, spanId } = span
    this.room(traceId.length + spanId.length + 12)
    const b = this.bytes
    this.keyStart = this.position
    let p = writeKey(bucket, b, this.position, true)
    b[p++] = 0
    for (let i = 0; i < traceId.length; i++) b[p++] = traceId.charCodeAt(i)
    b[p++] = 0
    for (let i = 0; i < spanId.length; i++) b[p++] = spanId.charCodeAt(i)
    this.position = this.valueStart = p
  }

  /** The trace index entry of (trace, bucket), with an empty value: Keys.ts, `writeTraceIndexKey`. */
  traceIndexEntry(traceId: string, bucket: number): void {
    this.room(traceIndexKeyBytes)
    this.keyStart = this.position
    writeTraceIndexKey(this.bytes, this.position, traceId, bucket)
    this.position = this.valueStart = this.position + traceIndexKeyBytes
    this.endEntry(TRACE_INDEX)
  }

  endEntry(db: number): void {
    if (this.count * 3 + 3 > this.table.length) {
      const bigger = new Uint32Array(this.table.length * 2)
      bigger.set(this.table)
      this.table = bigger
    }
    const t = this.count * 3
    this.table[t] = db
    this.table[t + 1] = this.valueStart - this.keyStart
    this.table[t + 2] = this.position - this.valueStart
    this.count++
  }
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/**
 * Index keys hold a span's service with its route (RED cells) or with its agent's id (blocks); the
 * wire bounds neither, so a span whose pair would not fit in a key is refused here, alone.
 */
const checkKeyRoom = (span: Telemetry.Span, route: string, agentId: string, index: number): void => {
  const other = route.length > agentId.length ? route : agentId
  // UTF-8 takes at most 3 bytes per UTF-16 unit: most spans pass without measuring.
  if ((span.service.length + other.length) * 3 <= maxLabelBytes) return
  const bytes =
    Buffer.byteLength(span.service) + Math.max(Buffer.byteLength(route), Buffer.byteLength(agentId))
  if (bytes > maxLabelBytes)
    throw new UnindexableSpan({
      path: `spans[${index}]`,
      reason: `service and route (or agent id) take ${bytes} bytes of UTF-8; index keys hold at most ${maxLabelBytes}`
    })
}

/** Span indexes grouped by one key part, then by service bucket (Keys.ts). */
type Blocks<K> = Map<K, Map<number, Array<number>>>

const addToBlock = <K>(blocks: Blocks<K>, part: K, bucket: number, index: number): void => {
  let byBucket = blocks.get(part)
  if (byBucket === undefined) {
    byBucket = new Map()
    blocks.set(part, byBucket)
  }
  const block = byBucket.get(bucket)
  if (block === undefined) byBucket.set(bucket, [index])
  else block.push(index)
}

const planSpans = (b: Builder, batch: PlanInput) => {
  const { spans } = batch
  const red = batch.red === undefined ? new RedSampler() : undefined
  const services = new Map<string, Mutable<ServiceInfoValue>>()
  const serviceBlocks: Blocks<string> = new Map()
  // Status class, then duration band: the status index's blocks.
  const statusBlocks = new Map<string, Blocks<number>>()
  // BigInt division allocates: each span's start in microseconds is computed once.
  const starts = Float64Array.from(spans, (span) => micros(span.startTimeUnixNano))
  for (let i = 0; i < spans.length; i++) {
    const span = spans[i] as Telemetry.Span
    const route = routeOf(span)
    checkKeyRoom(span, route, batch.agentId, i)
    const startMicros = starts[i] as number
    const correlated = span.correlationId !== span.traceId
    const idBucket = idTimeBucket(span.traceId)
    const spanAt = spanKeyBucketOf(startMicros, idBucket)
    b.beginSpanEntry(span, spanAt)
    SpanRecord.write(b, span)
    b.endEntry(SPANS)
    // A span not in its trace id's bucket needs a trace index entry: one after each run of such spans
    // of the same trace and bucket (the writer stores it when a span of the run was new).
    if (spanAt !== idBucket) {
      const next = spans[i + 1]
      if (next?.traceId !== span.traceId || spanKeyBucketOf(starts[i + 1] as number, idBucket) !== spanAt)
        b.traceIndexEntry(span.traceId, spanAt)
    }
    const bucket = serviceBucket(startMicros)
    addToBlock(serviceBlocks, span.service, bucket, i)
    const cls = Telemetry.statusClass(span.http?.statusCode)
    if (statusIndexed(cls)) {
      let bands = statusBlocks.get(cls)
      if (bands === undefined) {
        bands = new Map()
        statusBlocks.set(cls, bands)
      }
      addToBlock(bands, durationBand(span.durationNano), bucket, i)
    }
    // Most spans are correlated by their own trace id, which the spans table already answers.
    if (correlated) {
      b.beginEntry(correlationKey(span))
      b.number(1)
      b.endEntry(BY_CORRELATION)
    }
    if (red !== undefined && span.kind === "server")
      red.add(span.service, route, startMicros, span.durationNano, span.error)
    let seen = services.get(span.service)
    if (seen === undefined) {
      seen = { lastSeenUnixNano: span.startTimeUnixNano }
      services.set(span.service, seen)
    } else if (span.startTimeUnixNano > seen.lastSeenUnixNano) seen.lastSeenUnixNano = span.startTimeUnixNano
    if (span.component !== undefined) seen.component = span.component
    if (span.composition !== undefined) seen.composition = span.composition
    if (span.namespace !== undefined) seen.namespace = span.namespace
  }
  planServiceBlocks(b, batch, serviceBlocks, starts)
  planStatusBlocks(b, batch, statusBlocks, starts)
  return {
    red: batch.red ?? red?.done() ?? [],
    services: Array.from(services),
    spanMinutes: batch.peers === undefined ? undefined : Uint32Array.from(starts, digestMinute)
  }
}

/**
 * One index entry holding, for each span of `indexes`, its start µs, trace id and span id, then what
 * `rest` writes: `fields` values per span in all.
 */
const planBlock = (
  b: Builder,
  db: number,
  key: ReadonlyArray<KeyPart>,
  fields: number,
  indexes: ReadonlyArray<number>,
  batch: PlanInput,
  starts: Float64Array,
  rest: (span: Telemetry.Span) => void
) => {
  b.beginEntry(key)
  b.arrayHeader(indexes.length * fields)
  for (const i of indexes) {
    const span = batch.spans[i] as Telemetry.Span
    b.number(starts[i] as number)
    b.string(span.traceId)
    b.string(span.spanId)
    rest(span)
  }
  b.endEntry(db)
}

/** The ids of a block's first span, which key the block (Keys.ts). */
const firstIds = (batch: PlanInput, indexes: ReadonlyArray<number>): readonly [string, string] => {
  const first = batch.spans[indexes[0] ?? 0] as Telemetry.Span
  return [first.traceId, first.spanId]
}

/** One byService entry per (service, bucket): ServiceBlockSpan fields, flat, for each of its spans. */
const planServiceBlocks = (b: Builder, batch: PlanInput, blocks: Blocks<string>, starts: Float64Array) => {
  for (const [service, byBucket] of blocks)
    for (const [bucket, indexes] of byBucket)
      planBlock(
        b,
        BY_SERVICE,
        [service, bucket, ...firstIds(batch, indexes)] satisfies ServiceBlockKey,
        blockFields,
        indexes,
        batch,
        starts,
        (span) => {
          b.string(routeOf(span))
          b.number(span.http?.statusCode ?? 0)
          b.number(span.durationNano)
          b.number(span.error ? 1 : 0)
          b.string(span.correlationId !== span.traceId ? span.correlationId : "")
        }
      )
}

/** One byStatus entry per (status class, duration band, bucket): StatusBlockSpan fields, flat. */
const planStatusBlocks = (
  b: Builder,
  batch: PlanInput,
  blocks: Map<string, Blocks<number>>,
  starts: Float64Array
) => {
  for (const [cls, bands] of blocks)
    for (const [band, byBucket] of bands)
      for (const [bucket, indexes] of byBucket)
        planBlock(
          b,
          BY_STATUS,
          [cls, band, bucket, ...firstIds(batch, indexes)] satisfies StatusBlockKey,
          statusBlockFields,
          indexes,
          batch,
          starts,
          (span) => {
            b.string(span.service)
            b.string(routeOf(span))
            b.number(span.durationNano)
          }
        )
}

/**
 * Plans a batch (or a share of one); it is already validated (the wire decoder checked every field).
 * Throws `UnindexableSpan` for a span whose labels do not fit in an index key.
 */
export const planBatch = (batch: PlanInput): BatchPlan => {
  const b = new Builder(batch.spans.length)
  const { red, services, spanMinutes } = planSpans(b, batch)
  return {
    agentId: batch.agentId,
    seq: batch.seq,
    spanCount: batch.spans.length,
    logCount: batch.logs.length,
    metricCount: batch.metrics.length,
    table: b.table.subarray(0, b.count * 3),
    bytes: b.bytes.subarray(0, b.position),
    red,
    services,
    logs: batch.logs,
    logIndexes: batch.logIndexes,
    metrics: batch.metrics,
    metricIndexes: batch.metricIndexes,
    peers: batch.peers,
    spanMinutes
  }
}

/** Stores a round of planned batches in one durable transaction; outcomes in input order. */
export interface RoundWriter {
  readonly writeRound: (
    round: ReadonlyArray<BatchPlan>
  ) => Effect.Effect<ReadonlyArray<WriteOutcome>, StoreError>
}

/** The buffers to transfer (not copy) when posting plans to another thread. */
export const transferList = (plans: ReadonlyArray<BatchPlan>): Array<ArrayBuffer> =>
  plans.flatMap((plan) =>
    plan.table.buffer === plan.bytes.buffer
      ? [plan.bytes.buffer as ArrayBuffer]
      : [plan.table.buffer as ArrayBuffer, plan.bytes.buffer as ArrayBuffer]
  )
