/**
 * Field checks for decoding wire frames. They throw `Invalid` (a plain object, no stack capture: the
 * happy path pays nothing and the error path stays cheap); `decodeFrame` catches it at the top and
 * turns it into a `WireError`. Nothing outside the decoder sees these throws.
 *
 * Each check accepts exactly what the matching `Telemetry` schema accepts, so a decoded frame always
 * re-validates against `WireProtocol.Frame`.
 */
import type { WireErrorCode } from "../Errors.js"

// Fields declared, not parameter properties: Node's type stripping runs this file unchanged.
export class Invalid {
  readonly code: WireErrorCode
  readonly path: string
  readonly reason: string
  constructor(code: WireErrorCode, path: string, reason: string) {
    this.code = code
    this.path = path
    this.reason = reason
  }
  /** The same failure seen from the enclosing value (`spans[3]` + `.traceId`). */
  within(prefix: string): Invalid {
    const sep = this.path === "" || this.path.startsWith("[") ? "" : "."
    return new Invalid(this.code, `${prefix}${sep}${this.path}`, this.reason)
  }
}

/** Rethrows `e` with `prefix` prepended to its path; anything else is rethrown as is. */
export const rethrowWithin = (e: unknown, prefix: string): never => {
  throw e instanceof Invalid ? e.within(prefix) : e
}

/** Field failures inside telemetry are `invalid_batch`; everything else in a frame is `malformed`. */
export type Code = "malformed" | "invalid_batch"

const describe = (v: unknown): string => {
  if (v === null) return "nil"
  if (Array.isArray(v)) return "an array"
  if (v instanceof Uint8Array) return "binary"
  if (typeof v !== "object") return typeof v
  const proto: unknown = Object.getPrototypeOf(v)
  return proto === Object.prototype ? "a map" : `a ${(v as object).constructor?.name ?? "non-plain object"}`
}

export const fail = (code: Code, path: string, reason: string): never => {
  throw new Invalid(code, path, reason)
}

export const tuple = (v: unknown, length: number, code: Code, path: string): ReadonlyArray<unknown> => {
  if (!Array.isArray(v)) return fail(code, path, `expected an array, got ${describe(v)}`)
  // Trailing elements are allowed: later minor revisions append optional fields.
  if (v.length < length) return fail(code, path, `expected at least ${length} elements, got ${v.length}`)
  return v
}

export const array = (v: unknown, code: Code, path: string): ReadonlyArray<unknown> =>
  Array.isArray(v) ? v : fail(code, path, `expected an array, got ${describe(v)}`)

export const string = (v: unknown, code: Code, path: string): string =>
  typeof v === "string" ? v : fail(code, path, `expected a string, got ${describe(v)}`)

/** `undefined` for nil. */
export const optionalString = (v: unknown, code: Code, path: string): string | undefined =>
  v === null ? undefined : string(v, code, path)

export const boundedString = (v: unknown, min: number, max: number, code: Code, path: string): string => {
  const s = string(v, code, path)
  return s.length >= min && s.length <= max
    ? s
    : fail(code, path, `expected ${min}..${max} characters, got ${s.length}`)
}

export const nonEmptyString = (v: unknown, code: Code, path: string): string => {
  const s = string(v, code, path)
  return s.length > 0 ? s : fail(code, path, "must not be empty")
}

export const boolean = (v: unknown, code: Code, path: string): boolean =>
  typeof v === "boolean" ? v : fail(code, path, `expected a boolean, got ${describe(v)}`)

export const number = (v: unknown, code: Code, path: string): number =>
  typeof v === "number" ? v : fail(code, path, `expected a number, got ${describe(v)}`)

/** A safe integer; 64-bit integers from other encoders arrive as bigint and are accepted when safe. */
export const integer = (v: unknown, code: Code, path: string): number => {
  if (typeof v === "number" && Number.isSafeInteger(v)) return v
  if (typeof v === "bigint" && v >= Number.MIN_SAFE_INTEGER && v <= Number.MAX_SAFE_INTEGER) return Number(v)
  return fail(code, path, `expected an integer, got ${typeof v === "number" ? v : describe(v)}`)
}

export const nonNegativeInteger = (v: unknown, code: Code, path: string): number => {
  const n = integer(v, code, path)
  return n >= 0 ? n : fail(code, path, `expected a non-negative integer, got ${n}`)
}

/** `undefined` for nil. */
export const optionalNonNegativeInteger = (v: unknown, code: Code, path: string): number | undefined =>
  v === null ? undefined : nonNegativeInteger(v, code, path)

/** Unix nanoseconds: a non-negative 64-bit integer (small values may arrive as plain numbers). */
export const unixNano = (v: unknown, code: Code, path: string): bigint => {
  if (typeof v === "bigint" && v >= 0n) return v
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return BigInt(v)
  return fail(code, path, `expected unix nanoseconds (non-negative integer), got ${describe(v)}`)
}

/** Index into a list of literals, e.g. `["server", "client"]`. */
export const literal = <A extends string>(
  v: unknown,
  values: ReadonlyArray<A>,
  code: Code,
  path: string
): A => {
  const found = typeof v === "number" ? values[v] : undefined
  return found ?? fail(code, path, `expected one of 0..${values.length - 1} (${values.join(", ")}), got ${v}`)
}

/** OpenTelemetry-style attributes: a map of string keys to string, number or boolean. */
export const attributes = (
  v: unknown,
  code: Code,
  path: string
): Record<string, string | number | boolean> | undefined => {
  if (v === null) return undefined
  // Only a plain map: extension types (Date, Set, RegExp...) decode to other objects.
  if (typeof v !== "object" || Object.getPrototypeOf(v) !== Object.prototype)
    return fail(code, path, `expected a map, got ${describe(v)}`)
  const out: Record<string, string | number | boolean> = {}
  for (const key in v) {
    const value: unknown = (v as Record<string, unknown>)[key]
    if (typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean")
      return fail(code, `${path}.${key}`, `expected a string, number or boolean, got ${describe(value)}`)
    out[key] = value
  }
  return out
}

/** Raw bytes (msgpack bin). */
export const bytes = (v: unknown, code: Code, path: string): Uint8Array =>
  v instanceof Uint8Array ? v : fail(code, path, `expected binary, got ${describe(v)}`)
