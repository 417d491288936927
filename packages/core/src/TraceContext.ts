/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): `traceparent` and `tracestate` parsing and
 * formatting, id generation, and iii's correlation id rule.
 *
 * Parsers never throw: a malformed header is `Option.none()`, which per the spec means "restart the
 * trace" for `traceparent` and "drop the whole list" for `tracestate`.
 *
 * - `traceparent` version `00` must be exactly 55 characters. A higher version (not `ff`) is parsed
 *   per the spec's forward-compatibility rules: at least 55 characters, the known fields in place, and
 *   anything after them introduced by `-`. We always write version `00` (the "downgrade" mutation).
 * - Surrounding spaces and tabs (HTTP optional whitespace) are ignored; more than one `traceparent`
 *   header makes the context invalid.
 * - Flags: only `sampled` (0x01) and Level 2's `random` (0x02) are kept when we derive a context;
 *   reserved bits are cleared, as the spec requires.
 * - Correlation id: the trace id, unless the request carries a valid `x-iii-correlation-id` (trimmed,
 *   1..256 printable ASCII characters). An invalid header is ignored, never an error.
 */
import { randomFillSync } from "node:crypto"
import * as Option from "effect/Option"
import type { SpanId, TraceId } from "./Telemetry.js"

export const traceparentHeader = "traceparent"
export const tracestateHeader = "tracestate"
export const correlationIdHeader = "x-iii-correlation-id"

/** The caller may have recorded trace data. */
export const FLAG_SAMPLED = 0x01
/** The trace id's right-most 7 bytes are random (Trace Context Level 2). */
export const FLAG_RANDOM = 0x02
const KNOWN_FLAGS = FLAG_SAMPLED | FLAG_RANDOM

/** A parsed `traceparent`: the caller's position in the trace. */
export interface TraceParent {
  readonly traceId: TraceId
  /** The `parent-id` field: the caller's span id. */
  readonly spanId: SpanId
  /** The 8-bit `trace-flags` field. */
  readonly flags: number
}

/** `tracestate` list members, left-most (most recent) first. Keys are unique. */
export type TraceState = ReadonlyArray<readonly [key: string, value: string]>

/** Maximum list members in a `tracestate` (W3C). */
export const maxTraceStateMembers = 32
/** Maximum length of `x-iii-correlation-id`; the same bound as `Span.correlationId`. */
export const maxCorrelationIdLength = 256

type HeaderValue = string | ReadonlyArray<string> | undefined

// ---------------------------------------------------------------------------------------------------
// ids

const hexByte = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))

// Ids are made per request on the agent's hot path: draw CSPRNG bytes in 4 KiB refills, not per id,
// and hex them natively into one flat string (joining 2-character pieces would build a rope).
const POOL_BYTES = 4096
let pool = Buffer.alloc(0)
let poolAt = 0

const isZeroRun = (from: number, to: number): boolean => {
  for (let i = from; i < to; i++) if (pool[i] !== 0) return false
  return true
}

/** `length` random bytes from the system CSPRNG as hex, never all zero (an all-zero id is invalid). */
const randomId = (length: number): string => {
  for (;;) {
    if (poolAt + length > pool.length) {
      pool = randomFillSync(Buffer.allocUnsafe(POOL_BYTES))
      poolAt = 0
    }
    poolAt += length
    if (!isZeroRun(poolAt - length, poolAt)) return pool.toString("hex", poolAt - length, poolAt)
  }
}

/**
 * A new 16-byte trace id: the current time in milliseconds in the first 6 bytes (big-endian), then
 * 10 random bytes. W3C Trace Context Level 2 only asks for the right-most 7 bytes to be random (what
 * the `random` flag promises); the time prefix makes the ids iii mints sort by time, so obs appends
 * new traces to its trace-id-keyed table instead of dirtying a random page per span (AWS X-Ray's
 * ids carry their time the same way). Ids from other tracers are taken as they come.
 */
export const newTraceId = (now: number = Date.now()): TraceId =>
  `${Math.trunc(now).toString(16).padStart(12, "0").slice(-12)}${randomId(10)}` as TraceId

/** A new random 8-byte span id. */
export const newSpanId = (): SpanId => randomId(8) as SpanId

const isLowerHex = (c: number) => (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66)

/** `s[from, from + length)` is lowercase hex. */
const lowerHexAt = (s: string, from: number, length: number): boolean => {
  for (let i = from; i < from + length; i++) if (!isLowerHex(s.charCodeAt(i))) return false
  return true
}

const allZeroAt = (s: string, from: number, length: number): boolean => {
  for (let i = from; i < from + length; i++) if (s.charCodeAt(i) !== 0x30) return false
  return true
}

/** A trace id as the model requires it: 32 lowercase hex characters, not all zero. */
export const isTraceId = (s: string): s is TraceId =>
  s.length === 32 && lowerHexAt(s, 0, 32) && !allZeroAt(s, 0, 32)

/** A span id as the model requires it: 16 lowercase hex characters, not all zero. */
export const isSpanId = (s: string): s is SpanId =>
  s.length === 16 && lowerHexAt(s, 0, 16) && !allZeroAt(s, 0, 16)

// ---------------------------------------------------------------------------------------------------
// traceparent

/** Strips HTTP optional whitespace (SP / HTAB). */
const trimOws = (s: string) => s.replace(/^[ \t]+|[ \t]+$/g, "")

/** The single value of a header that must not repeat; `undefined` when absent or repeated. */
const single = (value: HeaderValue): string | undefined => {
  if (value === undefined || typeof value === "string") return value
  return value.length === 1 ? value[0] : undefined
}

/**
 * Parses a `traceparent` header value. `None` when absent, repeated or malformed: wrong length,
 * uppercase or non-hex characters, all-zero ids, version `ff`, or a version `00` header with extra data.
 */
export const parseTraceParent = (header: HeaderValue): Option.Option<TraceParent> => {
  const raw = single(header)
  if (raw === undefined) return Option.none()
  const s = trimOws(raw)
  if (s.length < 55 || !lowerHexAt(s, 0, 2) || s.charCodeAt(2) !== 0x2d) return Option.none()
  const version = s.slice(0, 2)
  if (version === "ff") return Option.none()
  if (version === "00" ? s.length !== 55 : s.length > 55 && s.charCodeAt(55) !== 0x2d) return Option.none()
  if (s.charCodeAt(35) !== 0x2d || s.charCodeAt(52) !== 0x2d) return Option.none()
  if (!lowerHexAt(s, 3, 32) || allZeroAt(s, 3, 32)) return Option.none()
  if (!lowerHexAt(s, 36, 16) || allZeroAt(s, 36, 16)) return Option.none()
  if (!lowerHexAt(s, 53, 2)) return Option.none()
  const flags = Number.parseInt(s.slice(53, 55), 16)
  return Option.some({
    traceId: s.slice(3, 35) as TraceId,
    spanId: s.slice(36, 52) as SpanId,
    // From a future version we may only trust the flags we know.
    flags: version === "00" ? flags : flags & KNOWN_FLAGS
  })
}

/** Formats a `traceparent` header value, always version `00`. */
export const formatTraceParent = (context: TraceParent): string =>
  `00-${context.traceId}-${context.spanId}-${hexByte[context.flags & 0xff]}`

export const isSampled = (context: TraceParent): boolean => (context.flags & FLAG_SAMPLED) !== 0

/**
 * A new trace: fresh random ids, `random` flag set, `sampled` unless told otherwise (iii records every
 * request it sees, so by default it says so).
 */
export const root = (options?: { readonly sampled?: boolean }): TraceParent => ({
  traceId: newTraceId(),
  spanId: newSpanId(),
  flags: FLAG_RANDOM | (options?.sampled === false ? 0 : FLAG_SAMPLED)
})

/** The context of an operation caused by `parent`: same trace, new span id, known flags kept. */
export const child = (parent: TraceParent): TraceParent => ({
  traceId: parent.traceId,
  spanId: newSpanId(),
  flags: parent.flags & KNOWN_FLAGS
})

// ---------------------------------------------------------------------------------------------------
// tracestate

const isLcAlpha = (c: number) => c >= 0x61 && c <= 0x7a
const isDigit = (c: number) => c >= 0x30 && c <= 0x39
const isKeyChar = (c: number) =>
  isLcAlpha(c) || isDigit(c) || c === 0x5f || c === 0x2d || c === 0x2a || c === 0x2f

const keyCharsFrom = (s: string, from: number) => {
  for (let i = from; i < s.length; i++) if (!isKeyChar(s.charCodeAt(i))) return false
  return true
}

/**
 * `simple-key` (up to 256 characters) or `tenant@system` (tenant up to 241, system up to 14 characters
 * starting with a letter). A simple key may start with a digit, as Level 2 allows.
 */
const isTraceStateKey = (key: string): boolean => {
  const at = key.indexOf("@")
  if (at === -1) {
    const c = key.charCodeAt(0)
    return key.length >= 1 && key.length <= 256 && (isLcAlpha(c) || isDigit(c)) && keyCharsFrom(key, 1)
  }
  const tenant = key.slice(0, at)
  const system = key.slice(at + 1)
  const t = tenant.charCodeAt(0)
  return (
    tenant.length >= 1 &&
    tenant.length <= 241 &&
    (isLcAlpha(t) || isDigit(t)) &&
    keyCharsFrom(tenant, 1) &&
    system.length >= 1 &&
    system.length <= 14 &&
    isLcAlpha(system.charCodeAt(0)) &&
    keyCharsFrom(system, 1)
  )
}

/** 1..256 printable ASCII characters except `,` and `=`, not ending in a space. */
const isTraceStateValue = (value: string): boolean => {
  if (value.length < 1 || value.length > 256 || value.charCodeAt(value.length - 1) === 0x20) return false
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c < 0x20 || c > 0x7e || c === 0x2c || c === 0x3d) return false
  }
  return true
}

/**
 * Parses `tracestate`; several header fields are joined with `,` (RFC 7230). Empty members are
 * skipped. `None` when any member is malformed, a key repeats, or there are more than 32 members: the
 * spec says to discard the whole list then. Parse it only when `traceparent` was valid.
 */
export const parseTraceState = (header: HeaderValue): Option.Option<TraceState> => {
  if (header === undefined) return Option.some([])
  const joined = typeof header === "string" ? header : header.join(",")
  const members: Array<readonly [string, string]> = []
  const seen = new Set<string>()
  for (const part of joined.split(",")) {
    const member = trimOws(part)
    if (member === "") continue
    const eq = member.indexOf("=")
    if (eq === -1) return Option.none()
    const key = member.slice(0, eq)
    const value = member.slice(eq + 1)
    if (!isTraceStateKey(key) || !isTraceStateValue(value) || seen.has(key)) return Option.none()
    seen.add(key)
    members.push([key, value])
    if (members.length > maxTraceStateMembers) return Option.none()
  }
  return Option.some(members)
}

/** Formats `tracestate`; an empty list formats as `""` (callers should then omit the header). */
export const formatTraceState = (state: TraceState): string => state.map(([k, v]) => `${k}=${v}`).join(",")

/**
 * Adds or updates `key` and moves it to the left, as the spec requires of a modified entry; drops
 * entries from the right beyond 32. Returns the list unchanged when key or value is malformed.
 */
export const setTraceStateEntry = (state: TraceState, key: string, value: string): TraceState => {
  if (!isTraceStateKey(key) || !isTraceStateValue(value)) return state
  const rest = state.filter(([k]) => k !== key)
  return [[key, value] as const, ...rest].slice(0, maxTraceStateMembers)
}

// ---------------------------------------------------------------------------------------------------
// correlation id

/**
 * Validates an `x-iii-correlation-id` header value: trimmed, 1..256 characters, printable ASCII
 * (interior spaces allowed). `None` when absent or invalid; with several header fields the first counts.
 */
export const parseCorrelationId = (header: HeaderValue): Option.Option<string> => {
  const raw = typeof header === "string" || header === undefined ? header : header[0]
  if (raw === undefined) return Option.none()
  const value = trimOws(raw)
  if (value.length < 1 || value.length > maxCorrelationIdLength) return Option.none()
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c < 0x20 || c > 0x7e) return Option.none()
  }
  return Option.some(value)
}

/** The correlation id rule: the header's value when valid, else the trace id. */
export const correlationIdFor = (traceId: TraceId, header: HeaderValue): string =>
  Option.getOrElse(parseCorrelationId(header), () => traceId)

// ---------------------------------------------------------------------------------------------------
// request headers → span context

/** HTTP request headers by name, as Node's `IncomingHttpHeaders` (names matched case-insensitively). */
export type Headers = Readonly<Record<string, HeaderValue>>

/** The trace context an incoming request carried. */
export interface Incoming {
  readonly parent: Option.Option<TraceParent>
  /** Empty when `traceparent` was invalid or `tracestate` malformed (the spec's discard rules). */
  readonly traceState: TraceState
  readonly correlationId: Option.Option<string>
}

const concat = (a: HeaderValue, b: string | ReadonlyArray<string>): ReadonlyArray<string> =>
  (a === undefined ? [] : typeof a === "string" ? [a] : a).concat(b)

/** Reads the trace context headers of a request in one pass over the header names. */
export const extract = (headers: Headers): Incoming => {
  let traceparent: HeaderValue
  let tracestate: HeaderValue
  let correlation: HeaderValue
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    switch (name.toLowerCase()) {
      case traceparentHeader:
        traceparent = traceparent === undefined ? value : concat(traceparent, value)
        break
      case tracestateHeader:
        tracestate = tracestate === undefined ? value : concat(tracestate, value)
        break
      case correlationIdHeader:
        correlation = correlation === undefined ? value : concat(correlation, value)
        break
    }
  }
  const parent = parseTraceParent(traceparent)
  return {
    parent,
    traceState: Option.isSome(parent) ? Option.getOrElse(parseTraceState(tracestate), () => []) : [],
    correlationId: parseCorrelationId(correlation)
  }
}

/** Where a server span sits in its trace, and the correlation id it carries. */
export interface ServerContext extends TraceParent {
  readonly parentSpanId: Option.Option<SpanId>
  readonly correlationId: string
  readonly traceState: TraceState
}

/**
 * The context for the server span of a request: a child of the caller's context when the request
 * carried a valid `traceparent`, otherwise a new trace. The correlation id follows the rule above.
 */
export const serverContext = (incoming: Incoming): ServerContext => {
  const self = Option.match(incoming.parent, { onNone: () => root(), onSome: child })
  return {
    ...self,
    parentSpanId: Option.map(incoming.parent, (p) => p.spanId),
    correlationId: Option.getOrElse(incoming.correlationId, () => self.traceId),
    traceState: incoming.traceState
  }
}
