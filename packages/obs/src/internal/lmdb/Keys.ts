/**
 * Every LMDB database name and key layout of the store, in one place. Keys are arrays encoded by
 * lmdb's ordered-binary encoding, so they sort element by element and a prefix range is one scan.
 * Times in keys are unix microseconds (exact in a double); the exact nanoseconds live in the values.
 */
import { HashRing, type Telemetry } from "@iii/core"

/** Bumped when a layout below changes incompatibly; checked at open. */
export const layoutVersion = 5

export const dbNames = {
  /** [traceId, spanId] → the span's SpanRecord bytes (SpanRecord.ts) */
  spans: "spans",
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

export type SpanKey = readonly [traceId: string, spanId: string]
export const spanKey = (span: Telemetry.Span): SpanKey => [span.traceId, span.spanId]

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
  | readonly ["span", traceId: string, spanId: string]
  | readonly ["log", correlationKey: string, timeMicros: number, agentId: string, seq: number, index: number]
  | readonly ["metric", timeMicros: number, agentId: string, seq: number, index: number]
  | readonly ["red", service: string, bucketStartSec: number, agentId: string, seq: number]

/** The key logs are filed under (and placed by, in a cluster). */
export { logKeyOf as logCorrelationKey } from "../../Store.js"

const hashEncoder = new TextEncoder()

/**
 * A record's hash for the digests: MurmurHash3 of its key's parts joined by NUL. A span's is the hash
 * of its `spans` key bytes (the ids are ASCII hex joined by one 0 byte), so the writer can hash the
 * key it has just put.
 */
export const recordHash = (key: RecordKey): number =>
  HashRing.murmur3(hashEncoder.encode((key[0] === "span" ? key.slice(1) : key).join("\u0000")))
