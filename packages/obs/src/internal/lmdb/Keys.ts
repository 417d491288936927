/**
 * Every LMDB database name and key layout of the store, in one place. Keys are arrays encoded by
 * lmdb's ordered-binary encoding, so they sort element by element and a prefix range is one scan.
 * Times in keys are unix microseconds (exact in a double); the exact nanoseconds live in the values.
 */
import { HashRing, type Telemetry } from "@iii/core"

/** Bumped when a layout below changes incompatibly; checked at open. */
export const layoutVersion = 6

export const dbNames = {
  /** [10 ms bucket of its start, traceId, spanId] → the span's SpanRecord bytes (SpanRecord.ts) */
  spans: "spans",
  /** epoch (u32) + group (u8, from the trace id's hash) + round (u32), binary → that round's entries of the group's ids: traceId (16 bytes) + span bucket (u48) each (see traceIndexGroupKey) */
  traceIndex: "trace-index",
  /** epoch (4 bytes, as epochStart) → the Bloom filter of the trace ids of a sealed epoch of the trace index (TraceFilter.ts) */
  traceFilters: "trace-filters",
  /** [service, bucket, traceId, spanId] → ServiceBlockValue: spans of the service starting in the bucket that one write stored, keyed by the first */
  byService: "span-blocks-by-service",
  /** [statusClass, durationBand, bucket, traceId, spanId] → StatusBlockValue; not for 2xx (see statusIndexed) */
  byStatus: "span-blocks-by-status",
  /** [correlationId, startMicros, traceId, spanId] → 1; only for spans whose correlation id is not their trace id */
  byCorrelation: "span-by-correlation",
  /** [service, route, bucketStartSec] → RedCellValue; route "" is the all-routes aggregate */
  red: "red",
  /** [correlationKey, timeMicros, agentId, seq, index] → LogRecord; correlationKey "" when none */
  logs: "logs",
  /** [timeMicros, agentId, seq, index] → correlationKey (retention walks this) */
  logsByTime: "logs-by-time",
  /** [timeMicros, agentId, seq, index] → MetricPoint */
  metrics: "metrics",
  /** [service, bucketStartSec, agentId, seq] → RedPartValue: one batch's server spans of the service in a rollup bucket, applied to `red` once */
  redParts: "red-parts",
  /** service → ServiceInfoValue */
  services: "services",
  /** [peer, minute] → DigestValue: what this node stores that `peer` should store too, per minute (anti-entropy) */
  digests: "repair-digests",
  /** [target node, hint number] → a write for a node that was down, kept until it is handed off */
  hints: "hints",
  /** "layout" → layoutVersion; "ring" → the cluster's ring layout; "members" → members that joined */
  meta: "meta"
} as const

/** The databases a write plan's entries go to, by their index in the plan's entry table (WritePlan.ts). */
export const plannedDbs = [
  "spans",
  "traceIndex",
  "byService",
  "byStatus",
  "byCorrelation"
] as const satisfies ReadonlyArray<keyof typeof dbNames>

/** Rollup route key meaning "all routes of the service". */
export const allRoutes = ""

export const micros = (nanos: bigint): number => Number(nanos / 1000n)

/** Upper bound usable as the last element of a range end (sorts after any string or number). */
export const maxKeyPart = "\uffff"

/**
 * UTF-8 bytes an index key's labels (a service with a route or an agent id) may take together: the
 * longest key lmdb takes (1978 bytes), less room for the key's numbers, ids and separators.
 */
export const maxLabelBytes = 1978 - 64

/**
 * Spans are keyed by time first so that inserts append whatever their trace ids are: ids from other
 * tracers are random, and a table keyed by them takes every insert on a page of its own (each span
 * then costs a page write at its commit, and more so as the table grows). A 10 ms bucket keeps each
 * bucket's keys few enough that a commit writes its buckets' pages about once.
 *
 * The bucket is the trace id's own time when the id carries one (iii's agents mint ids that start
 * with the time in ms: TraceContext.newTraceId) and the span starts within `idTimeSlackMicros` of it:
 * every span of such a trace is then in one bucket that a lookup reads off the id, and needs no trace
 * index entry. Otherwise (a random id, or a span long after its trace began) the bucket is the span's
 * start's, and the trace index (below) tells where it is. A random id that happens to read as a time
 * near its span's start is stored as a time-prefixed one, and found as one.
 */
export const spanBucketMicros = 10_000
export const spanBucket = (startMicros: number): number => Math.floor(startMicros / spanBucketMicros)
const idTimeSlackMicros = 3_600_000_000

const hexDigit = (c: number): number => (c <= 57 ? c - 48 : c - 87)

/** The bucket of the time in an id's first 6 bytes (ms), for any id of 32 lowercase hex digits. */
export const idTimeBucket = (traceId: string): number => {
  // Digit by digit: no substring to allocate on ingest's per-span path.
  let ms = 0
  for (let i = 0; i < 12; i++) ms = ms * 16 + hexDigit(traceId.charCodeAt(i))
  return spanBucket(ms * 1000)
}

/** Where a span is stored, given its trace id's bucket (`idTimeBucket`): that one when near its start. */
export const spanKeyBucketOf = (startMicros: number, idBucket: number): number =>
  Math.abs(idBucket * spanBucketMicros - startMicros) <= idTimeSlackMicros
    ? idBucket
    : spanBucket(startMicros)

/** Where a span is stored: in its trace id's bucket (no trace index entry needed) or its start's. */
export const spanKeyBucket = (startMicros: number, traceId: string): number =>
  spanKeyBucketOf(startMicros, idTimeBucket(traceId))

export type SpanKey = readonly [bucket: number, traceId: string, spanId: string]
export const spanKey = (span: Telemetry.Span): SpanKey => [
  spanKeyBucket(micros(span.startTimeUnixNano), span.traceId),
  span.traceId,
  span.spanId
]

/**
 * Where the ids start in a `spans` key's bytes: ordered-binary writes a number inside an array in 9
 * bytes, then the 0 separator. The writer hashes the ids (`recordHash` of a span) from there.
 */
export const spanIdsOffset = 10

/**
 * The trace index: which span buckets hold a trace's spans. An entry is the trace id (16 bytes) and
 * the bucket (u48, big-endian); the writer stores a round's entries in 256 groups by a byte of the
 * id's hash (traceGroup), one value per group, under epoch (u32), group (u8), round (u32): a round of thousands of entries is at
 * most 256 puts of short runs instead of one put each (a put of a random key costs as much as a
 * span's). An epoch is a run of at least `epochEntries` entries (the writer starts the next one after
 * it, and one at each start): the groups of random ids land within the current epoch only, a key
 * range small enough for a commit to rewrite its pages about once, instead of all over the index. A
 * sealed epoch has a Bloom filter of its trace ids (TraceFilter.ts) and one value per group (the
 * writer compacts it as it seals it): a lookup reads, in the epochs
 * whose filter may hold the id and in the current one, the groups of the id's group; see the
 * obs README, "Storage".
 */
export const epochEntries = 20_000
/** What the plan holds per entry (WritePlan.ts): an epoch's 4 bytes (0), the id, the bucket. */
export const traceIndexKeyBytes = 26
export const epochBytes = 4
export const traceIdBytes = 16
export const traceIndexEntryBytes = 22
const groupKeyBytes = 9

/** Writes the plan entry of (trace, bucket) at `at`: 4 bytes 0, then the index entry. */
export const writeTraceIndexKey = (target: Uint8Array, at: number, traceId: string, bucket: number): void => {
  target.fill(0, at, at + epochBytes)
  const idAt = at + epochBytes
  for (let i = 0; i < traceIdBytes; i++)
    target[idAt + i] = (hexDigit(traceId.charCodeAt(2 * i)) << 4) | hexDigit(traceId.charCodeAt(2 * i + 1))
  const high = Math.floor(bucket / 2 ** 32)
  const low = bucket >>> 0
  const b = idAt + traceIdBytes
  target[b] = high >>> 8
  target[b + 1] = high & 0xff
  target[b + 2] = low >>> 24
  target[b + 3] = (low >>> 16) & 0xff
  target[b + 4] = (low >>> 8) & 0xff
  target[b + 5] = low & 0xff
}

/** A trace id's group (0–255): the top byte of its hash (TraceFilter.idHash), so that ids sharing a prefix spread too. */
export const traceGroup = (idHash: number): number => idHash >>> 24

/** The key of a round's group of entries of ids in `group` (traceGroup). */
export const traceIndexGroupKey = (epoch: number, group: number, round: number): Buffer => {
  const key = Buffer.alloc(groupKeyBytes)
  key.writeUInt32BE(epoch, 0)
  key[epochBytes] = group
  key.writeUInt32BE(round, epochBytes + 1)
  return key
}

export const epochOf = (key: Uint8Array): number => Buffer.from(key.buffer, key.byteOffset, 4).readUInt32BE(0)

/** The round of a group's key (traceIndexGroupKey). */
export const traceIndexRound = (key: Uint8Array): number =>
  Buffer.from(key.buffer, key.byteOffset, groupKeyBytes).readUInt32BE(epochBytes + 1)

/** A group's entries: their ids (views into the value) and buckets. */
export function* indexEntries(value: Uint8Array): Generator<readonly [id: Uint8Array, bucket: number]> {
  const view = Buffer.from(value.buffer, value.byteOffset, value.length)
  for (let at = 0; at + traceIndexEntryBytes <= value.length; at += traceIndexEntryBytes)
    yield [view.subarray(at, at + traceIdBytes), view.readUIntBE(at + traceIdBytes, 6)]
}

/**
 * The buckets a group names for an id (`id` from traceIdKeyPart). Byte by byte in JS: most entries
 * differ in the first byte, where a native compare per entry cost a call each.
 */
export const groupBuckets = (value: Uint8Array, id: Uint8Array, into: Set<number>): void => {
  const first = id[0]
  for (let at = 0; at + traceIndexEntryBytes <= value.length; at += traceIndexEntryBytes) {
    if (value[at] !== first) continue
    let i = 1
    while (i < traceIdBytes && value[at + i] === id[i]) i++
    if (i < traceIdBytes) continue
    const b = at + traceIdBytes
    into.add(
      ((value[b] as number) * 256 + (value[b + 1] as number)) * 2 ** 32 +
        (((value[b + 2] as number) << 24) >>> 0) +
        ((value[b + 3] as number) << 16) +
        ((value[b + 4] as number) << 8) +
        (value[b + 5] as number)
    )
  }
}

/** A trace id as stored in the index (undefined when it is not 32 lowercase hex digits: no span has it). */
export const traceIdKeyPart = (traceId: string): Buffer | undefined =>
  /^[0-9a-f]{32}$/.test(traceId) ? Buffer.from(traceId, "hex") : undefined

/** The key range of one epoch's groups that may hold a trace, by its id's hash (TraceFilter.idHash). */
export const traceIndexRange = (epoch: number, idHash: number): { start: Buffer; end: Buffer } => ({
  start: traceIndexGroupKey(epoch, traceGroup(idHash), 0),
  end: traceIndexGroupKey(epoch, traceGroup(idHash), 0xffffffff)
})

/** The first key of an epoch (0 for none), for ranges over whole epochs; also its filter's key. */
export const epochStart = (epoch: number): Buffer => {
  const key = Buffer.alloc(epochBytes)
  key.writeUInt32BE(epoch, 0)
  return key
}

/**
 * The per-service index holds blocks, not one entry per span: each batch's spans of a service that
 * start in the same 100 ms bucket share one entry (one put instead of hundreds at high rates). A
 * bucket bounds its spans' start times, so a newest-first walk over buckets stays exactly ordered:
 * everything in the buckets walked so far is newer than anything in those left, and a search sorts
 * only within a bucket. Retention drops a block once its whole bucket is older than the cutoff.
 */
export const serviceBucketMicros = 100_000
export const serviceBucket = (startMicros: number): number => Math.floor(startMicros / serviceBucketMicros)

/**
 * A block is keyed by the first span it holds: each span is in one block of each index, so the key is
 * unique, and a write storing some spans again (a re-sent batch, a late hint, a repair) keys its block
 * of the spans that were new by a span no other block holds.
 */
export type ServiceBlockKey = readonly [service: string, bucket: number, traceId: string, spanId: string]

/**
 * `blockFields` values per span, flat: what a search needs to filter without reading the span, and
 * what retention needs to delete its other entries. correlationId is "" when the span's correlation
 * id is its trace id (then it has no correlation index entry).
 */
export type ServiceBlockValue = ReadonlyArray<string | number>
export const blockFields = 8
export type ServiceBlockSpan = readonly [
  startMicros: number,
  traceId: string,
  spanId: string,
  route: string,
  statusCode: number,
  durationNano: number,
  error: 0 | 1,
  correlationId: string
]

/**
 * The (status class, duration) index, in blocks as the service index is: each batch's spans of a
 * status class whose durations fall in the same power-of-two band (below 1 ms, 1–2 ms, 2–4 ms, …)
 * and that start in the same service bucket share one entry. Within a band entries follow time, so
 * writes append instead of landing on a random page per span (a key ordered by exact duration would),
 * and a search from a minimum duration walks each band from it up newest first and merges them.
 */
export const maxDurationBand = 24
export const durationBand = (durationNano: number): number =>
  durationNano < 1_000_000
    ? 0
    : Math.min(maxDurationBand, 1 + Math.floor(Math.log2(durationNano / 1_000_000)))

export type StatusBlockKey = readonly [
  statusClass: string,
  durationBand: number,
  bucket: number,
  traceId: string,
  spanId: string
]

/** `statusBlockFields` values per span, flat. */
export type StatusBlockValue = ReadonlyArray<string | number>
export const statusBlockFields = 6
export type StatusBlockSpan = readonly [
  startMicros: number,
  traceId: string,
  spanId: string,
  service: string,
  route: string,
  durationNano: number
]

/**
 * Whether spans of a status class go into the status index. 2xx spans, the vast majority, do not:
 * the index serves cross-service error searches (4xx, 5xx, none) and stays small; slow-2xx searches
 * walk the per-service index instead.
 */
export const statusIndexed = (statusClass: string): boolean => statusClass !== "2xx"

/** The status classes the status index holds (retention walks each). */
export const indexedStatusClasses: ReadonlyArray<Telemetry.StatusClass> = ["1xx", "3xx", "4xx", "5xx", "none"]

export type CorrelationKey = readonly [
  correlationId: string,
  startMicros: number,
  traceId: string,
  spanId: string
]
export const correlationKey = (span: Telemetry.Span): CorrelationKey => [
  span.correlationId,
  micros(span.startTimeUnixNano),
  span.traceId,
  span.spanId
]

export type RedKey = readonly [service: string, route: string, bucketStartSec: number]

/**
 * RED rollups are written per batch part, not per span: a batch's server spans of one service in one
 * rollup bucket are a part, applied to the cells once (its key is stored with it), so a re-sent batch,
 * a hint and a repair never count a request twice, and a repair can copy a part a replica missed.
 */
export type RedPartKey = readonly [service: string, bucketStartSec: number, agentId: string, seq: number]

/**
 * The part's samples: its routes, then per sample three numbers (route index, duration in
 * nanoseconds, error 1 or 0), a Float64Array's bytes.
 */
export interface RedPartValue {
  readonly routes: ReadonlyArray<string>
  readonly samples: Uint8Array
}

/** Per (peer, minute): how many records, and two sums of their hashes (`recordHash`): xor and add. */
export type DigestKey = readonly [peer: string, minute: number]
export type DigestValue = readonly [count: number, xor: number, sum: number]

export const digestMinute = (timeMicros: number): number => Math.floor(timeMicros / 60_000_000)

export interface RedCellValue {
  readonly count: number
  readonly errors: number
  readonly sketch: Telemetry.SketchData
}

export type LogKey = readonly [
  correlationKey: string,
  timeMicros: number,
  agentId: string,
  seq: number,
  index: number
]
export type TimeKey = readonly [timeMicros: number, agentId: string, seq: number, index: number]

export interface ServiceInfoValue {
  readonly component?: string
  readonly composition?: string
  readonly namespace?: string
  readonly lastSeenUnixNano: bigint
}

/** A record's identity for anti-entropy digests: what kind it is and the key it is stored under. */
export type RecordKey =
  | readonly ["span", traceId: string, spanId: string, bucket: number]
  | readonly ["log", correlationKey: string, timeMicros: number, agentId: string, seq: number, index: number]
  | readonly ["metric", timeMicros: number, agentId: string, seq: number, index: number]
  | readonly ["red", service: string, bucketStartSec: number, agentId: string, seq: number]

/** The key logs are filed under (and placed by, in a cluster). */
export { logKeyOf as logCorrelationKey } from "../../Store.js"

const hashEncoder = new TextEncoder()

/**
 * A record's hash for the digests: MurmurHash3 of its key's parts joined by NUL. A span's is the hash
 * of its ids, which its `spans` key bytes hold from `spanIdsOffset` on (ASCII hex joined by one 0
 * byte), so the writer can hash the key it has just put.
 */
export const recordHash = (key: RecordKey): number =>
  HashRing.murmur3(hashEncoder.encode((key[0] === "span" ? key.slice(1, 3) : key).join("\u0000")))
