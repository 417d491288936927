/**
 * Query-parameter parsing for the HTTP API and the live tail: pure functions from strings to values,
 * failing with an `InvalidParameter` that names the parameter and says what was expected.
 */
import { Either } from "effect"
import { InvalidParameter } from "../../Errors.js"
import type { StatusFilter, TraceQuery } from "../../Store.js"
import { decodeCursor } from "../Cursor.js"

const durationUnitsNano: Record<string, number> = {
  ns: 1,
  us: 1e3,
  µs: 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
  d: 86_400e9
}
const durationSyntax = /^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)$/

/** `200ms`, `1.5s`, `5m`, `7d` → nanoseconds. */
export const parseDurationNano = (
  parameter: string,
  text: string
): Either.Either<number, InvalidParameter> => {
  const m = durationSyntax.exec(text.trim())
  const unit = m?.[2] !== undefined ? durationUnitsNano[m[2]] : undefined
  if (m === null || m[1] === undefined || unit === undefined)
    return Either.left(
      new InvalidParameter({
        parameter,
        reason: `"${text}" is not a duration such as 200ms, 1.5s, 5m, 1h or 7d`
      })
    )
  return Either.right(Math.round(Number(m[1]) * unit))
}

/**
 * A point in time: RFC 3339 (`2026-01-01T10:00:00Z`), unix nanoseconds (all digits, ≥ 16 of them),
 * unix milliseconds (all digits, fewer), or a duration meaning that long before `now` (`15m`).
 */
export const parseTimeNano = (
  parameter: string,
  text: string,
  nowNano: bigint
): Either.Either<bigint, InvalidParameter> => {
  if (/^\d{1,15}$/.test(text)) return Either.right(BigInt(text) * 1_000_000n)
  if (/^\d{16,20}$/.test(text)) return Either.right(BigInt(text))
  const ago = parseDurationNano(parameter, text)
  if (Either.isRight(ago)) return Either.right(nowNano - BigInt(ago.right))
  const ms = /^\d{4}-\d{2}-\d{2}T/.test(text) ? Date.parse(text) : Number.NaN
  if (Number.isNaN(ms))
    return Either.left(
      new InvalidParameter({
        parameter,
        reason: `"${text}" is not a time: use RFC 3339, unix milliseconds or nanoseconds, or a duration ago such as 15m`
      })
    )
  return Either.right(BigInt(ms) * 1_000_000n)
}

const statusFilters = ["1xx", "2xx", "3xx", "4xx", "5xx", "none", "error"] as const

export const parseStatus = (
  parameter: string,
  text: string
): Either.Either<StatusFilter, InvalidParameter> =>
  (statusFilters as ReadonlyArray<string>).includes(text)
    ? Either.right(text as StatusFilter)
    : Either.left(
        new InvalidParameter({ parameter, reason: `"${text}" is not one of ${statusFilters.join(", ")}` })
      )

export const parseInteger = (
  parameter: string,
  text: string,
  min: number,
  max: number
): Either.Either<number, InvalidParameter> => {
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN
  return Number.isInteger(n) && n >= min && n <= max
    ? Either.right(n)
    : Either.left(
        new InvalidParameter({ parameter, reason: `"${text}" is not an integer from ${min} to ${max}` })
      )
}

const nonEmpty = (parameter: string, text: string): Either.Either<string, InvalidParameter> =>
  text.length > 0 && text.length <= 512
    ? Either.right(text)
    : Either.left(new InvalidParameter({ parameter, reason: "must be 1 to 512 characters" }))

/** Rejects parameters the endpoint does not know, so a typo (`minduration`) is not silently ignored. */
export const rejectUnknown = (
  params: URLSearchParams,
  known: ReadonlyArray<string>
): Either.Either<void, InvalidParameter> => {
  for (const key of params.keys())
    if (!known.includes(key))
      return Either.left(
        new InvalidParameter({ parameter: key, reason: `unknown; expected one of ${known.join(", ")}` })
      )
  return Either.void
}

/** A parameter that may appear at most once. */
const single = (
  params: URLSearchParams,
  name: string
): Either.Either<string | undefined, InvalidParameter> => {
  const all = params.getAll(name)
  return all.length > 1
    ? Either.left(new InvalidParameter({ parameter: name, reason: "given more than once" }))
    : Either.right(all[0])
}

const optional = <A>(
  params: URLSearchParams,
  name: string,
  parse: (parameter: string, text: string) => Either.Either<A, InvalidParameter>
): Either.Either<A | undefined, InvalidParameter> =>
  Either.flatMap(single(params, name), (text) =>
    text === undefined ? Either.right(undefined) : parse(name, text)
  )

/** Longest correlation id ingest accepts (`Telemetry.Span.correlationId`); a longer one cannot match. */
export const maxCorrelationIdLength = 256

/** A correlation id from the path: 1 to `maxCorrelationIdLength` characters. */
export const parseCorrelationId = (text: string): Either.Either<string, InvalidParameter> =>
  text.length >= 1 && text.length <= maxCorrelationIdLength
    ? Either.right(text)
    : Either.left(
        new InvalidParameter({
          parameter: "correlationId",
          reason: `must be 1 to ${maxCorrelationIdLength} characters (ingest accepts no longer ones), got ${text.length}`
        })
      )

export const defaultLimit = 20
export const maxLimit = 1000

/** `GET /v1/traces` parameters. */
export const parseTraceQuery = (
  params: URLSearchParams,
  nowNano: bigint
): Either.Either<TraceQuery, InvalidParameter> =>
  Either.gen(function* () {
    yield* rejectUnknown(params, [
      "service",
      "route",
      "status",
      "minDuration",
      "since",
      "until",
      "limit",
      "cursor"
    ])
    const service = yield* optional(params, "service", nonEmpty)
    const route = yield* optional(params, "route", nonEmpty)
    const status = yield* optional(params, "status", parseStatus)
    const minDurationNano = yield* optional(params, "minDuration", parseDurationNano)
    const sinceNano = yield* optional(params, "since", (p, t) => parseTimeNano(p, t, nowNano))
    const untilNano = yield* optional(params, "until", (p, t) => parseTimeNano(p, t, nowNano))
    const limit = yield* optional(params, "limit", (p, t) => parseInteger(p, t, 1, maxLimit))
    const cursor = yield* optional(params, "cursor", (p, t) =>
      decodeCursor(t)._tag === "Some"
        ? Either.right(t)
        : Either.left(new InvalidParameter({ parameter: p, reason: "not a cursor returned by this API" }))
    )
    if (sinceNano !== undefined && untilNano !== undefined && sinceNano >= untilNano)
      return yield* Either.left(new InvalidParameter({ parameter: "since", reason: "must be before until" }))
    return {
      limit: limit ?? defaultLimit,
      ...(service !== undefined && { service }),
      ...(route !== undefined && { route }),
      ...(status !== undefined && { status }),
      ...(minDurationNano !== undefined && { minDurationNano }),
      ...(sinceNano !== undefined && { sinceNano }),
      ...(untilNano !== undefined && { untilNano }),
      ...(cursor !== undefined && { cursor })
    }
  })

export interface RedQuery {
  readonly route?: string
  readonly windowSec: number
  readonly stepSec: number
}

/** `GET /v1/services/{service}/red` parameters: window (default 5m, ≤ 7d), step (default 10s, multiple of 10s, ≥ window/1000). */
export const parseRedQuery = (params: URLSearchParams): Either.Either<RedQuery, InvalidParameter> =>
  Either.gen(function* () {
    yield* rejectUnknown(params, ["window", "step", "route"])
    const route = yield* optional(params, "route", nonEmpty)
    const window = yield* optional(params, "window", parseDurationNano)
    const step = yield* optional(params, "step", parseDurationNano)
    const windowSec = Math.round((window ?? 300e9) / 1e9)
    const stepSec = Math.round((step ?? 10e9) / 1e9)
    if (windowSec < 10 || windowSec > 7 * 86_400)
      return yield* Either.left(
        new InvalidParameter({ parameter: "window", reason: "must be from 10s to 7d" })
      )
    if (stepSec < 10 || stepSec % 10 !== 0)
      return yield* Either.left(
        new InvalidParameter({ parameter: "step", reason: "must be a multiple of 10s" })
      )
    if (stepSec > windowSec)
      return yield* Either.left(new InvalidParameter({ parameter: "step", reason: "must not exceed window" }))
    if (windowSec / stepSec > 1000)
      return yield* Either.left(
        new InvalidParameter({ parameter: "step", reason: "gives more than 1000 points" })
      )
    return { windowSec, stepSec, ...(route !== undefined && { route }) }
  })

/** Live-tail filters: a span is delivered when it matches every given one. */
export interface TailFilter {
  readonly service?: string
  readonly route?: string
  readonly status?: StatusFilter
  readonly minDurationNano?: number
  readonly format: "json" | "msgpack"
}

export const parseTailFilter = (params: URLSearchParams): Either.Either<TailFilter, InvalidParameter> =>
  Either.gen(function* () {
    yield* rejectUnknown(params, ["service", "route", "status", "minDuration", "format"])
    const service = yield* optional(params, "service", nonEmpty)
    const route = yield* optional(params, "route", nonEmpty)
    const status = yield* optional(params, "status", parseStatus)
    const minDurationNano = yield* optional(params, "minDuration", parseDurationNano)
    const format = yield* optional(
      params,
      "format",
      (p, t): Either.Either<TailFilter["format"], InvalidParameter> =>
        t === "json" || t === "msgpack"
          ? Either.right(t)
          : Either.left(new InvalidParameter({ parameter: p, reason: `"${t}" is not json or msgpack` }))
    )
    return {
      format: format ?? "json",
      ...(service !== undefined && { service }),
      ...(route !== undefined && { route }),
      ...(status !== undefined && { status }),
      ...(minDurationNano !== undefined && { minDurationNano })
    }
  })
