/**
 * Thresholds with units, as users write them in a ServiceComposition (`200ms`, `2%`, `150rps`).
 * They are parsed here, once, into numbers in one canonical unit per kind; everything downstream
 * (rendering, the scaling loop, obs queries) works with the numbers.
 */
import { Either, ParseResult, Schema } from "effect"

/** A latency, in milliseconds. */
export interface Duration {
  readonly kind: "duration"
  readonly milliseconds: number
  readonly text: string
}

/** A ratio in percent (0–100), for error rates and CPU utilisation. */
export interface Percentage {
  readonly kind: "percentage"
  readonly percent: number
  readonly text: string
}

/** Requests per second. */
export interface Rate {
  readonly kind: "rate"
  readonly perSecond: number
  readonly text: string
}

export type Quantity = Duration | Percentage | Rate
export type QuantityKind = Quantity["kind"]

const durationUnits: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000
}
const rateUnits: Record<string, number> = { rps: 1, rpm: 1 / 60 }

export const examples: Record<QuantityKind, string> = {
  duration: "a duration such as 200ms or 1.5s (units: ns, us, ms, s, m)",
  percentage: "a percentage such as 2% or 80%",
  rate: "a rate such as 150rps (units: rps, rpm)"
}

const syntax = /^(-?)(\d+(?:\.\d+)?)\s*([a-zµ%]+)$/

/** Parses `200ms`, `1.5s`, `2%`, `150rps`; fails with a message saying what was expected. */
export const parse = (text: string): Either.Either<Quantity, string> => {
  const match = syntax.exec(text.trim())
  if (match === null) {
    return Either.left(`"${text}" is not ${Object.values(examples).join(", or ")}`)
  }
  const [, sign, digits, unit] = match as unknown as [string, string, string, string]
  if (sign === "-") return Either.left(`"${text}" must not be negative`)
  const value = Number(digits)
  if (value === 0) return Either.left(`"${text}" must be greater than zero`)
  if (unit === "%") {
    return value > 100
      ? Either.left(`"${text}" must be at most 100%`)
      : Either.right({ kind: "percentage", percent: value, text })
  }
  const toMillis = durationUnits[unit]
  if (toMillis !== undefined) return Either.right({ kind: "duration", milliseconds: value * toMillis, text })
  const toPerSecond = rateUnits[unit]
  if (toPerSecond !== undefined) return Either.right({ kind: "rate", perSecond: value * toPerSecond, text })
  return Either.left(
    `"${text}" has an unknown unit "${unit}"; expected ${Object.values(examples).join(", or ")}`
  )
}

const QuantityType = Schema.declare(
  (u: unknown): u is Quantity =>
    typeof u === "object" && u !== null && "kind" in u && "text" in u && typeof u.text === "string",
  { identifier: "Quantity" }
)

/** A string such as `200ms` in the document; a parsed `Quantity` once decoded. */
export const FromString = Schema.transformOrFail(Schema.String.pipe(Schema.maxLength(32)), QuantityType, {
  strict: true,
  decode: (text, _, ast) =>
    Either.match(parse(text), {
      onLeft: (message) => ParseResult.fail(new ParseResult.Type(ast, text, message)),
      onRight: ParseResult.succeed
    }),
  encode: (quantity) => ParseResult.succeed(quantity.text)
}).annotations({
  description: "A threshold with its unit: a duration (200ms, 1.5s), a percentage (2%) or a rate (150rps)."
})
