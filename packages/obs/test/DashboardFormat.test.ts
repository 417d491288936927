import { describe, expect, it } from "vitest"
import { clock, duration, percent, rate, statusClass, stepFor } from "../dashboard/src/format.js"

describe("how the dashboard writes numbers", () => {
  it("durations in the unit a person reads best", () => {
    expect([0, 0.25, 12.34, 250.4, 1240, 150_000, null].map(duration)).toEqual([
      "0",
      "250 µs",
      "12.3 ms",
      "250 ms",
      "1.24 s",
      "2.5 min",
      "–"
    ])
  })

  it("rates, percentages, status classes", () => {
    expect([0, 0.25, 3.21, 1500].map(rate)).toEqual(["0", "0.25/s", "3.2/s", "1.5k/s"])
    expect([0, 0.004, 0.12].map(percent)).toEqual(["0%", "0.4%", "12%"])
    expect([200, 302, 404, 502, undefined].map(statusClass)).toEqual([
      "ok",
      "redirect",
      "client-error",
      "server-error",
      "none"
    ])
  })

  it("about 30 points per window, in steps the RED API accepts (multiples of 10 s)", () => {
    expect(["5m", "15m", "1h", "6h", "24h"].map((w) => stepFor(w as "5m"))).toEqual([
      "10s",
      "30s",
      "120s",
      "720s",
      "2880s"
    ])
  })

  it("clock times from unix nanoseconds, to the millisecond", () => {
    const at = new Date(2026, 0, 2, 3, 4, 5, 67)
    expect(clock(BigInt(at.getTime()) * 1_000_000n + 999n)).toBe("03:04:05.067")
  })
})
