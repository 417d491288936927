/**
 * The wire codec: frames (`WireProtocol`) to bytes with the `Msgpack.Writer`, and bytes back to
 * validated frames with msgpackr. `WireProtocol` re-exports all of this.
 *
 * `decodeFrame` never throws: every failure is a `WireError` whose message names the path of the
 * offending field (`spans[3].traceId: must not be all zeros`).
 */
import * as Either from "effect/Either"
import { isNativeAccelerationEnabled, Unpackr } from "msgpackr"
import { messageOf, WireError, type WireErrorCode, wireErrorCodes } from "../Errors.js"
import { Writer } from "../Msgpack.js"
import type { LogRecord, MetricPoint, Span } from "../Telemetry.js"
import type { AgentIdentity, Batch, ErrorFrame, Frame, Hello, Welcome } from "../WireProtocol.js"
import * as Check from "./wireChecks.js"
import { ACK, BATCH, defaultMaxFrameBytes, ERROR, HELLO, PROTOCOL_VERSION, WELCOME } from "./wireFraming.js"
import * as Tuples from "./wireTelemetry.js"

/** Whether msgpackr's native string extractor (msgpackr-extract) is loaded; decoding is faster with it. */
export const isNativeAccelerated = (): boolean => isNativeAccelerationEnabled

export interface DecodeOptions {
  /** Frames larger than this are refused before decoding. Default `defaultMaxFrameBytes`. */
  readonly maxFrameBytes?: number
}

// ---------------------------------------------------------------------------------------------------
// encoding

/** Every frame is written here, then copied out at its size, so a frame keeps only its own bytes. */
const frameWriter = new Writer(0)

const frameBytes = (): Uint8Array => Buffer.from(frameWriter.written())

/** A frame of `elements` elements starts with the envelope `[version, type, ...]`. */
const startFrame = (elements: number, type: number): Writer => {
  const w = frameWriter
  w.clear()
  w.arrayHeader(elements)
  w.number(PROTOCOL_VERSION)
  w.number(type)
  return w
}

/** A batch frame's first elements; its id blobs and item lists follow, spans first (README, "Layout"). */
const startBatch = (seq: number): Writer => {
  const w = startFrame(8, BATCH)
  w.number(seq)
  return w
}

/**
 * A batch frame built item by item: each span, metric point and log record is encoded as it is
 * added, so a batch waiting to be sealed holds bytes rather than objects (objects that live that
 * long outgrow V8's young generation and make every collection expensive). `finish` returns
 * exactly the bytes `encodeFrame` gives for a batch of the same items, and starts the next batch.
 * Ids that are not hex of the right length throw a `TypeError` naming the field, a programming error.
 */
export class BatchEncoder {
  private readonly spanIds = new Writer(0)
  private readonly spanTuples = new Writer(0)
  private readonly metricTuples = new Writer(0)
  private readonly logIds = new Writer(0)
  private readonly logTuples = new Writer(0)
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
      this.spanIds.position +
      this.spanTuples.position +
      this.metricTuples.position +
      this.logIds.position +
      this.logTuples.position
    )
  }

  addSpan(span: Span): void {
    Tuples.writeSpanIds(this.spanIds, span, this.spans)
    Tuples.writeSpan(this.spanTuples, span)
    this.spans++
  }

  addMetric(point: MetricPoint): void {
    Tuples.writeMetric(this.metricTuples, point)
    this.metrics++
  }

  addLog(record: LogRecord): void {
    Tuples.writeLogIds(this.logIds, record, this.logs)
    Tuples.writeLog(this.logTuples, record)
    this.logs++
  }

  /** The batch frame with this `seq`; the encoder is empty afterwards. */
  finish(seq: number): Uint8Array {
    const w = startBatch(seq)
    w.binHeader(this.spanIds.position)
    w.raw(this.spanIds.written())
    w.arrayHeader(this.spans)
    w.raw(this.spanTuples.written())
    w.arrayHeader(this.metrics)
    w.raw(this.metricTuples.written())
    w.binHeader(this.logIds.position)
    w.raw(this.logIds.written())
    w.arrayHeader(this.logs)
    w.raw(this.logTuples.written())
    this.reset()
    return frameBytes()
  }

  private reset(): void {
    for (const w of [this.spanIds, this.spanTuples, this.metricTuples, this.logIds, this.logTuples]) w.clear()
    this.spans = 0
    this.metrics = 0
    this.logs = 0
  }
}

const encodeSmall = (f: Exclude<Frame, Batch>): Uint8Array => {
  switch (f.type) {
    case "hello": {
      const w = startFrame(5, HELLO)
      const a = f.agent
      w.number(f.version)
      w.arrayHeader(6)
      w.string(a.id)
      w.optionalString(a.service)
      w.optionalString(a.pod)
      w.optionalString(a.node)
      w.optionalString(a.namespace)
      w.optionalString(a.version)
      w.optionalString(f.token)
      break
    }
    case "welcome": {
      const w = startFrame(5, WELCOME)
      w.number(f.version)
      w.string(f.node)
      w.optionalNumber(f.maxFrameBytes)
      break
    }
    case "ack":
      startFrame(3, ACK).number(f.seq)
      break
    case "error": {
      const w = startFrame(6, ERROR)
      w.string(f.code)
      w.string(f.message)
      w.optionalNumber(f.seq)
      w.boolean(f.fatal)
      break
    }
  }
  return frameBytes()
}

/** A whole batch at once: the same bytes as a `BatchEncoder` given its items, with one id blob each. */
const encodeBatch = (f: Batch): Uint8Array => {
  const w = startBatch(f.seq)
  Tuples.writeSpanIdBlob(w, f.spans)
  w.arrayHeader(f.spans.length)
  for (let i = 0; i < f.spans.length; i++) Tuples.writeSpan(w, f.spans[i] as Span)
  w.arrayHeader(f.metrics.length)
  for (let i = 0; i < f.metrics.length; i++) Tuples.writeMetric(w, f.metrics[i] as MetricPoint)
  Tuples.writeLogIdBlob(w, f.logs)
  w.arrayHeader(f.logs.length)
  for (let i = 0; i < f.logs.length; i++) Tuples.writeLog(w, f.logs[i] as LogRecord)
  return frameBytes()
}

/**
 * Encodes a frame. The frame must satisfy its schema (the types promise it); ids that are not hex
 * of the right length make this throw a `TypeError` naming the field, a programming error.
 */
export const encodeFrame = (frame: Frame): Uint8Array =>
  frame.type === "batch" ? encodeBatch(frame) : encodeSmall(frame)

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

const errorCodes: ReadonlyArray<string> = wireErrorCodes

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
      ? wireError("truncated", `frame ends early: ${messageOf(e)}`)
      : wireError("malformed", `not valid MessagePack: ${messageOf(e)}`)
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
    return wireError("internal", `decoder failure: ${messageOf(e)}`, seq)
  }
}
