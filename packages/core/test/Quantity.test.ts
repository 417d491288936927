import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import * as Quantity from "../src/Quantity.js"

describe("Quantity", () => {
  it.each([
    ["200ms", { kind: "duration", milliseconds: 200 }],
    ["1.5s", { kind: "duration", milliseconds: 1500 }],
    ["250us", { kind: "duration", milliseconds: 0.25 }],
    ["2m", { kind: "duration", milliseconds: 120_000 }],
    ["2%", { kind: "percentage", percent: 2 }],
    ["80%", { kind: "percentage", percent: 80 }],
    ["150rps", { kind: "rate", perSecond: 150 }],
    ["600rpm", { kind: "rate", perSecond: 10 }]
  ])("parses %s", (text, expected) => {
    expect(Quantity.parse(text)).toEqual(Either.right({ ...expected, text }))
  })

  it.each([
    ["-200ms", "must not be negative"],
    ["0ms", "must be greater than zero"],
    ["101%", "at most 100%"],
    ["200", "is not a duration"],
    ["fast", "is not a duration"],
    ["20 parsecs", 'unknown unit "parsecs"'],
    ["20kb", 'unknown unit "kb"']
  ])("rejects %s", (text, reason) => {
    const result = Quantity.parse(text)
    expect(Either.isLeft(result) && result.left).toContain(reason)
  })
})
