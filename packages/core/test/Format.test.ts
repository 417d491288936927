import { describe, expect, it } from "vitest"
import * as Format from "../src/Format.js"

describe("Format: numbers and times for people", () => {
  it("durations in the unit a person reads best", () => {
    expect([0, 0.25, 12.34, 250.4, 1240, 150_000, null].map(Format.duration)).toEqual([
      "0",
      "250 µs",
      "12.3 ms",
      "250 ms",
      "1.24 s",
      "2.5 min",
      "–"
    ])
  })

  it("rates and percentages", () => {
    expect([0, 0.004, 0.25, 3.21, 1500].map(Format.rate)).toEqual([
      "0",
      "<0.01/s",
      "0.25/s",
      "3.2/s",
      "1.5k/s"
    ])
    expect([0, 0.004, 0.12].map(Format.percent)).toEqual(["0%", "0.4%", "12%"])
  })

  it("clock times from unix nanoseconds, to the millisecond", () => {
    const at = new Date(2026, 0, 2, 3, 4, 5, 67)
    expect(Format.clock(BigInt(at.getTime()) * 1_000_000n + 999n)).toBe("03:04:05.067")
    expect(Format.dateTime(String(BigInt(at.getTime()) * 1_000_000n))).toBe("2026-01-02 03:04:05")
  })

  it("a JSON log line reads as its message; anything else as it is", () => {
    expect(Format.logText('{"level":"info","msg":"order placed","traceId":"ab"}')).toBe("order placed")
    expect(Format.logText('{"message":"hello"}')).toBe("hello")
    expect(Format.logText('{"level":"info"}')).toBe('{"level":"info"}')
    expect(Format.logText("{not json")).toBe("{not json")
    expect(Format.logText("plain line")).toBe("plain line")
  })
})
