/**
 * The agent → obs protocol: binary WebSocket messages, one MessagePack-encoded frame per message.
 *
 * ## Frames
 * Every frame is a msgpack array `[protocolVersion, type, ...fields]`; that envelope prefix never
 * changes, so any version can read another's version number and refuse it cleanly. Types:
 * 1 hello, 2 welcome, 3 batch, 4 ack, 5 error. Telemetry travels as positional arrays with ids as raw
 * bytes (layout in README.md, "Wire protocol"). Decoders ignore trailing array elements they do not
 * know, so a minor revision may append optional fields without a version bump; anything else bumps
 * `PROTOCOL_VERSION`.
 *
 * ## State machine (one WebSocket connection)
 * ```
 *  agent                              obs
 *  hello{version, agent, token} ───▶  check version + token
 *                              ◀───  welcome{version, node, maxFrameBytes}   (or error, fatal)
 *  batch{seq=n} ───▶                  commit durably, then
 *                              ◀───  ack{seq=n}                              (or error{seq=n})
 *  batch{seq=n+1} ───▶ ...            (batches may be pipelined; acks come in order)
 * ```
 * - The token travels on the WebSocket upgrade (`Authorization: Bearer`); `hello.token` is kept for
 *   older obs nodes, which checked it there.
 * - The first agent frame must be `hello`; obs answers `welcome` or a fatal `error`
 *   (`unsupported_version` when it does not speak `hello.version`, `unauthorized` for a bad token).
 *   Any other frame before `welcome`, a second `hello`, or a frame of the wrong direction is a fatal
 *   `protocol` error.
 * - `seq` is per agent identity, starts at 1 and strictly increases (gaps allowed). `agent.id` names
 *   one agent *incarnation* (e.g. pod uid + a random boot id): a restarted agent is a new identity,
 *   since its numbering starts again at 1.
 * - obs acks a batch only after committing it durably, and stores each record once: a re-sent batch
 *   (same agent.id, seq and content) is acked again without storing anything twice.
 * - The agent keeps every unacked batch (bounded buffer) and, after a reconnect and a new `welcome`,
 *   resends them in seq order with their original seq numbers. Together with deduplication this
 *   gives effectively-once storage across reconnects.
 * - Errors: `fatal: true` means the sender closes the connection after sending it; the agent then
 *   reconnects with exponential backoff. Non-fatal errors name a batch via `seq`:
 *   `invalid_batch` (the batch can never be stored: the agent drops it and logs the message),
 *   `overloaded` and `internal` with a seq (not stored this time: resend it later, with backoff).
 *   Frames that cannot be decoded at all (`malformed`, `truncated`, `oversize`,
 *   `unsupported_version`) are fatal: the receiver cannot know which batch they were.
 * - `welcome.maxFrameBytes` tells the agent obs's frame limit; the agent splits its batches so that
 *   every frame stays below it (a frame over the limit is refused before it is decoded).
 *
 * `decodeFrame` never throws: every failure is a `WireError` whose message names the path of the
 * offending field (`spans[3].traceId: must not be all zeros`).
 */
import { Either, Schema } from "effect"
import { isNativeAccelerationEnabled, Packr, Unpackr } from "msgpackr"
import { WireError, WireErrorCode } from "./Errors.js"
import * as Check from "./internal/wireChecks.js"
import * as Tuples from "./internal/wireTelemetry.js"
import { LogRecord, MetricPoint, Span } from "./Telemetry.js"

export { WireError, WireErrorCode }

/** The protocol version this codec writes and accepts. */
export const PROTOCOL_VERSION = 1

/** Whether msgpackr's native string extractor (msgpackr-extract) is loaded; decoding is faster with it. */
export const isNativeAccelerated = (): boolean => isNativeAccelerationEnabled

/** Default limit on an encoded frame: 16 MiB. */
export const defaultMaxFrameBytes = 16 * 1024 * 1024

const PositiveInt = Schema.Number.pipe(Schema.int(), Schema.positive())

/** Batch sequence number: per agent identity, strictly increasing, from 1. */
export const Seq = PositiveInt

export const AgentIdentity = Schema.Struct({
  /** Unique per agent incarnation (see the module doc); 1..256 characters. */
  id: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256)),
  service: Schema.optional(Schema.String),
  pod: Schema.optional(Schema.String),
  node: Schema.optional(Schema.String),
  namespace: Schema.optional(Schema.String),
  /** The agent's software version. */
  version: Schema.optional(Schema.String)
})
export type AgentIdentity = typeof AgentIdentity.Type

/** agent → obs, first frame of a connection. */
export const Hello = Schema.Struct({
  type: Schema.Literal("hello"),
  /** The protocol version the agent speaks. */
  version: PositiveInt,
  agent: AgentIdentity,
  token: Schema.optional(Schema.String)
})
export type Hello = typeof Hello.Type

/** obs → agent, after a good hello. */
export const Welcome = Schema.Struct({
  type: Schema.Literal("welcome"),
  /** The protocol version obs will speak on this connection. */
  version: PositiveInt,
  /** The obs node that accepted the connection. */
  node: Schema.String,
  /** obs's frame limit; the agent keeps each frame below it. */
  maxFrameBytes: Schema.optional(PositiveInt)
})
export type Welcome = typeof Welcome.Type

/** agent → obs: telemetry. */
export const Batch = Schema.Struct({
  type: Schema.Literal("batch"),
  seq: Seq,
  spans: Schema.Array(Span),
  metrics: Schema.Array(MetricPoint),
  logs: Schema.Array(LogRecord)
})
export type Batch = typeof Batch.Type

/** obs → agent, after the batch `seq` is durably committed (or was already). */
export const Ack = Schema.Struct({ type: Schema.Literal("ack"), seq: Seq })
export type Ack = typeof Ack.Type

/** Either direction. `seq` names the batch concerned; `fatal` means the sender closes the connection. */
export const ErrorFrame = Schema.Struct({
  type: Schema.Literal("error"),
  code: WireErrorCode,
  message: Schema.String,
  seq: Schema.optional(Seq),
  fatal: Schema.Boolean
})
export type ErrorFrame = typeof ErrorFrame.Type

export const Frame = Schema.Union(Hello, Welcome, Batch, Ack, ErrorFrame)
export type Frame = typeof Frame.Type

export interface DecodeOptions {
  /** Frames larger than this are refused before decoding. Default `defaultMaxFrameBytes`. */
  readonly maxFrameBytes?: number
}

/**
 * The error frame answering a frame that failed with `error`, fatal per the state machine: everything
 * but `invalid_batch`, `overloaded`, and `internal` about a known batch.
 */
export const errorFrameFor = (error: WireError): ErrorFrame => {
  const frame: { -readonly [K in keyof ErrorFrame]: ErrorFrame[K] } = {
    type: "error",
    code: error.code,
    message: error.message,
    fatal: !(
      error.code === "invalid_batch" ||
      error.code === "overloaded" ||
      (error.code === "internal" && error.seq !== undefined)
    )
  }
  if (error.seq !== undefined) frame.seq = error.seq
  return frame
}

// ---------------------------------------------------------------------------------------------------
// encoding

const HELLO = 1
const WELCOME = 2
const BATCH = 3
const ACK = 4
const ERROR = 5

const packr = new Packr({ useRecords: false })

const helloTuple = (f: Hello) => {
  const a = f.agent
  return [
    PROTOCOL_VERSION,
    HELLO,
    f.version,
    [a.id, a.service ?? null, a.pod ?? null, a.node ?? null, a.namespace ?? null, a.version ?? null],
    f.token ?? null
  ]
}

const batchTuple = (f: Batch) => {
  const spans = new Array<ReadonlyArray<unknown>>(f.spans.length)
  for (let i = 0; i < spans.length; i++) spans[i] = Tuples.spanTuple(f.spans[i] as Span)
  return [
    PROTOCOL_VERSION,
    BATCH,
    f.seq,
    Tuples.spanIdsBlob(f.spans),
    spans,
    f.metrics.map(Tuples.metricTuple),
    Tuples.logIdsBlob(f.logs),
    f.logs.map(Tuples.logTuple)
  ]
}

const frameTuple = (f: Frame): ReadonlyArray<unknown> => {
  switch (f.type) {
    case "hello":
      return helloTuple(f)
    case "welcome":
      return [PROTOCOL_VERSION, WELCOME, f.version, f.node, f.maxFrameBytes ?? null]
    case "batch":
      return batchTuple(f)
    case "ack":
      return [PROTOCOL_VERSION, ACK, f.seq]
    case "error":
      return [PROTOCOL_VERSION, ERROR, f.code, f.message, f.seq ?? null, f.fatal]
  }
}

/**
 * Encodes a frame. The frame must satisfy its schema (the types promise it); ids that are not hex
 * of the right length make this throw a `TypeError` naming the field, a programming error.
 */
export const encodeFrame = (frame: Frame): Uint8Array => packr.pack(frameTuple(frame))

/** msgpack array header for `length` elements, in the smallest form (as msgpackr writes it). */
const arrayHeader = (length: number): Uint8Array =>
  length < 0x10
    ? Uint8Array.of(0x90 | length)
    : length < 0x10000
      ? Uint8Array.of(0xdc, length >> 8, length & 0xff)
      : Uint8Array.of(0xdd, length >>> 24, (length >> 16) & 0xff, (length >> 8) & 0xff, length & 0xff)

/** msgpack bin header for `length` bytes, in the smallest form (as msgpackr writes it). */
const binHeader = (length: number): Uint8Array =>
  length < 0x100
    ? Uint8Array.of(0xc4, length)
    : length < 0x10000
      ? Uint8Array.of(0xc5, length >> 8, length & 0xff)
      : Uint8Array.of(0xc6, length >>> 24, (length >> 16) & 0xff, (length >> 8) & 0xff, length & 0xff)

/** An append-only byte buffer that grows by doubling and is reused after `clear`. */
class Bytes {
  private buffer = Buffer.allocUnsafe(4096)
  length = 0

  reserve(extra: number): Buffer {
    if (this.length + extra > this.buffer.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + extra))
      this.buffer.copy(grown, 0, 0, this.length)
      this.buffer = grown
    }
    return this.buffer
  }

  append(bytes: Uint8Array): void {
    this.reserve(bytes.length).set(bytes, this.length)
    this.length += bytes.length
  }

  /** Writes `hex` as bytes; false (nothing kept) unless it was exactly `bytes` bytes of hex. */
  appendHex(hex: string, bytes: number): boolean {
    if (hex.length !== bytes * 2) return false
    const written = this.reserve(bytes).write(hex, this.length, bytes, "hex")
    if (written !== bytes) return false
    this.length += bytes
    return true
  }

  view(): Uint8Array {
    return this.buffer.subarray(0, this.length)
  }

  clear(): void {
    this.length = 0
  }
}

const ZERO_SPAN_ID = "0000000000000000"
const ZERO_TRACE_ID = "00000000000000000000000000000000"

/**
 * A batch frame built item by item: each span, metric point and log record is encoded as it is
 * added, so a batch waiting to be sealed holds bytes rather than objects (objects that live that
 * long outgrow V8's young generation and make every collection expensive). `finish` returns
 * exactly the bytes `encodeFrame` gives for a batch of the same items, and starts the next batch.
 * Ids that are not hex of the right length throw a `TypeError` naming the field, as in `encodeFrame`.
 */
export class BatchEncoder {
  private readonly spanIds = new Bytes()
  private readonly spanTuples = new Bytes()
  private readonly metricTuples = new Bytes()
  private readonly logIds = new Bytes()
  private readonly logTuples = new Bytes()
  spans = 0
  metrics = 0
  logs = 0

  /** Items added since the last `finish`. */
  get items(): number {
    return this.spans + this.metrics + this.logs
  }

  /** Encoded bytes of the items added so far (the frame adds a few bytes of headers). */
  get byteLength(): number {
    return (
      this.spanIds.length +
      this.spanTuples.length +
      this.metricTuples.length +
      this.logIds.length +
      this.logTuples.length
    )
  }

  addSpan(span: Span): void {
    const ids = this.spanIds
    const at = ids.length
    if (
      !ids.appendHex(span.traceId, 16) ||
      !ids.appendHex(span.spanId, 8) ||
      !ids.appendHex(span.parentSpanId ?? ZERO_SPAN_ID, 8)
    ) {
      ids.length = at
      // The field to name is found only on this (programming-error) path, not for every span.
      const path = `spans[${this.spans}]`
      Tuples.findBadId([
        [`${path}.traceId`, span.traceId, 32],
        [`${path}.spanId`, span.spanId, 16],
        [`${path}.parentSpanId`, span.parentSpanId ?? ZERO_SPAN_ID, 16]
      ])
    }
    this.spanTuples.append(packr.pack(Tuples.spanTuple(span)))
    this.spans++
  }

  addMetric(point: MetricPoint): void {
    this.metricTuples.append(packr.pack(Tuples.metricTuple(point)))
    this.metrics++
  }

  addLog(record: LogRecord): void {
    const ids = this.logIds
    const at = ids.length
    if (
      !ids.appendHex(record.traceId ?? ZERO_TRACE_ID, 16) ||
      !ids.appendHex(record.spanId ?? ZERO_SPAN_ID, 8)
    ) {
      ids.length = at
      const path = `logs[${this.logs}]`
      Tuples.findBadId([
        [`${path}.traceId`, record.traceId ?? ZERO_TRACE_ID, 32],
        [`${path}.spanId`, record.spanId ?? ZERO_SPAN_ID, 16]
      ])
    }
    this.logTuples.append(packr.pack(Tuples.logTuple(record)))
    this.logs++
  }

  /** The batch frame with this `seq`; the encoder is empty afterwards. */
  finish(seq: number): Uint8Array {
    const parts = [
      Uint8Array.of(0x98, PROTOCOL_VERSION, BATCH),
      packr.pack(seq),
      binHeader(this.spanIds.length),
      this.spanIds.view(),
      arrayHeader(this.spans),
      this.spanTuples.view(),
      arrayHeader(this.metrics),
      this.metricTuples.view(),
      binHeader(this.logIds.length),
      this.logIds.view(),
      arrayHeader(this.logs),
      this.logTuples.view()
    ]
    const frame = Buffer.concat(parts)
    for (const bytes of [this.spanIds, this.spanTuples, this.metricTuples, this.logIds, this.logTuples])
      bytes.clear()
    this.spans = 0
    this.metrics = 0
    this.logs = 0
    return frame
  }
}

// ---------------------------------------------------------------------------------------------------
// decoding

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, structuredClone: false })

const wireError = (code: WireErrorCode, message: string, seq?: number) =>
  Either.left(new WireError(seq === undefined ? { code, message } : { code, message, seq }))

const unsupported = (version: unknown) =>
  `unsupported protocol version ${String(version)} (this side speaks ${PROTOCOL_VERSION})`

/** The version in the envelope, read without decoding the frame: a positive fixint after the array header. */
const peekVersion = (bytes: Uint8Array): number | undefined => {
  const head = bytes[0] ?? 0
  const at = head >= 0x90 && head <= 0x9f ? 1 : head === 0xdc ? 3 : head === 0xdd ? 5 : -1
  const v = at === -1 ? undefined : bytes[at]
  return v !== undefined && v <= 0x7f ? v : undefined
}

const decodeHello = (t: ReadonlyArray<unknown>): Hello => {
  Check.tuple(t, 5, "malformed", "frame")
  const a = Check.tuple(t[3], 6, "malformed", "agent")
  const agent: { -readonly [K in keyof AgentIdentity]: AgentIdentity[K] } = {
    id: Check.boundedString(a[0], 1, 256, "malformed", "agent.id")
  }
  const optional = ["service", "pod", "node", "namespace", "version"] as const
  for (let k = 0; k < optional.length; k++) {
    const name = optional[k] as (typeof optional)[number]
    const value = Check.optionalString(a[k + 1], "malformed", `agent.${name}`)
    if (value !== undefined) agent[name] = value
  }
  const version = Check.integer(t[2], "malformed", "version")
  const hello: { -readonly [K in keyof Hello]: Hello[K] } = {
    type: "hello",
    version:
      version >= 1
        ? version
        : Check.fail("malformed", "version", `expected a positive integer, got ${version}`),
    agent
  }
  const token = Check.optionalString(t[4], "malformed", "token")
  if (token !== undefined) hello.token = token
  return hello
}

const positive = (v: unknown, path: string): number => {
  const n = Check.integer(v, "malformed", path)
  return n >= 1 ? n : Check.fail("malformed", path, `expected a positive integer, got ${n}`)
}

const decodeWelcome = (t: ReadonlyArray<unknown>): Welcome => {
  Check.tuple(t, 5, "malformed", "frame")
  const welcome: { -readonly [K in keyof Welcome]: Welcome[K] } = {
    type: "welcome",
    version: positive(t[2], "version"),
    node: Check.string(t[3], "malformed", "node")
  }
  if (t[4] !== null) welcome.maxFrameBytes = positive(t[4], "maxFrameBytes")
  return welcome
}

const errorCodes = WireErrorCode.literals

const decodeError = (t: ReadonlyArray<unknown>): ErrorFrame => {
  Check.tuple(t, 6, "malformed", "frame")
  const code = Check.string(t[2], "malformed", "code") as WireErrorCode
  if (!errorCodes.includes(code))
    Check.fail("malformed", "code", `unknown error code ${JSON.stringify(code)}`)
  const frame: { -readonly [K in keyof ErrorFrame]: ErrorFrame[K] } = {
    type: "error",
    code,
    message: Check.string(t[3], "malformed", "message"),
    fatal: Check.boolean(t[5], "malformed", "fatal")
  }
  if (t[4] !== null) frame.seq = positive(t[4], "seq")
  return frame
}

const decodeBatch = (t: ReadonlyArray<unknown>, seq: number): Batch => ({
  type: "batch",
  seq,
  spans: Tuples.decodeSpans(t[4], t[3]),
  metrics: Tuples.decodeMetrics(t[5]),
  logs: Tuples.decodeLogs(t[7], t[6])
})

const describeFailure = (e: unknown) => (e instanceof Error ? e.message : String(e))

/**
 * Decodes and validates one frame. Never throws: oversize frames are refused before decoding,
 * truncated and malformed msgpack, unknown versions and types, and every invalid field become a
 * `WireError`. A batch that fails validation yields `invalid_batch` with its `seq`.
 */
export const decodeFrame = (bytes: Uint8Array, options?: DecodeOptions): Either.Either<Frame, WireError> => {
  if (!(bytes instanceof Uint8Array)) return wireError("malformed", "frame is not binary")
  const limit = options?.maxFrameBytes ?? defaultMaxFrameBytes
  if (bytes.byteLength > limit)
    return wireError("oversize", `frame of ${bytes.byteLength} bytes exceeds the ${limit}-byte limit`)
  if (bytes.byteLength === 0) return wireError("truncated", "empty frame")
  const peeked = peekVersion(bytes)
  if (peeked !== undefined && peeked !== PROTOCOL_VERSION)
    return wireError("unsupported_version", unsupported(peeked))

  let raw: unknown
  try {
    // Node's Buffer lets msgpackr use its native string extraction; this view copies nothing.
    raw = unpackr.unpack(
      Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
    )
  } catch (e) {
    const incomplete = typeof e === "object" && e !== null && "incomplete" in e && e.incomplete === true
    return incomplete
      ? wireError("truncated", `frame ends early: ${describeFailure(e)}`)
      : wireError("malformed", `not valid MessagePack: ${describeFailure(e)}`)
  }

  let seq: number | undefined
  try {
    const t = Check.tuple(raw, 2, "malformed", "frame")
    if (t[0] !== PROTOCOL_VERSION)
      return typeof t[0] === "number" || typeof t[0] === "bigint"
        ? wireError("unsupported_version", unsupported(t[0]))
        : wireError("malformed", `frame: expected a protocol version, got ${typeof t[0]}`)
    switch (t[1]) {
      case HELLO:
        return Either.right(decodeHello(t))
      case WELCOME:
        return Either.right(decodeWelcome(t))
      case BATCH:
        Check.tuple(t, 8, "malformed", "frame")
        seq = positive(t[2], "seq")
        return Either.right(decodeBatch(t, seq))
      case ACK:
        Check.tuple(t, 3, "malformed", "frame")
        return Either.right({ type: "ack", seq: positive(t[2], "seq") })
      case ERROR:
        return Either.right(decodeError(t))
      default:
        return wireError("malformed", `type: unknown frame type ${String(t[1])}`)
    }
  } catch (e) {
    if (e instanceof Check.Invalid)
      return wireError(
        e.code,
        e.path === "" ? e.reason : `${e.path}: ${e.reason}`,
        e.code === "invalid_batch" ? seq : undefined
      )
    return wireError("internal", `decoder failure: ${describeFailure(e)}`, seq)
  }
}
