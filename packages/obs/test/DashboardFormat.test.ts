import { describe, expect, it } from "vitest"
import { statusClass, stepFor } from "../dashboard/src/format.js"

describe("the dashboard's own formats", () => {
  it("status classes", () => {
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
})
