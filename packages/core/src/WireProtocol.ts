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
 * This module is the protocol: this document, the frame schemas and the limits. The codec that turns
 * frames into bytes and back (`encodeFrame`, `BatchEncoder`, `decodeFrame`) is `WireCodec`,
 * re-exported here so that `WireProtocol` stays the one name to import; a process that must not load
 * `effect/Schema` (the node agent) imports `WireCodec` itself.
 */
import * as Schema from "effect/Schema"
import { WireError, type WireErrorCode as WireErrorCodeType, wireErrorCodes } from "./Errors.js"
import { LogRecord, MetricPoint, Span } from "./Telemetry.js"

/** A span's array length and fields as the wire writes them; obs stores spans alike, after the parent id. */
export { spanFieldCount, writeSpanFields } from "./internal/wireTelemetry.js"
export {
  BatchEncoder,
  type DecodeOptions,
  decodeFrame,
  defaultMaxFrameBytes,
  encodeFrame,
  isNativeAccelerated,
  PROTOCOL_VERSION
} from "./WireCodec.js"
export { WireError }

export const WireErrorCode = Schema.Literal(...wireErrorCodes)
export type WireErrorCode = WireErrorCodeType

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
