import { describe, expect, it } from "vitest"
import { RedMetrics } from "../src/internal/RedMetrics.js"

describe("RedMetrics", () => {
  it("keeps one HTTP series per role, method, route and status class", () => {
    const red = new RedMetrics({ service: "shop" }, 0n)
    red.recordRequest("server", "GET", "/a", 200, 1_000_000)
    red.recordRequest("server", "GET", "/a", 204, 3_000_000)
    red.recordRequest("server", "GET", "/a", 503, 1_000_000)
    red.recordRequest("server", "POST", "/a", 200, 1_000_000)
    red.recordRequest("server", "GET", "/b", undefined, 1_000_000)
    // Out of range: no status class, the same series as no response.
    red.recordRequest("server", "GET", "/b", 600, 1_000_000)
    red.recordRequest("server", "GET", "/b", 99, 1_000_000)
    red.recordRequest("client", "GET", "/a", 200, 1_000_000)
    const points = red.flush(10_000_000_000n)
    const rows = points
      .filter((p) => p.name.startsWith("http."))
      .map((p) => [
        p.name,
        p.attributes?.["http.request.method"],
        p.attributes?.["http.route"],
        p.attributes?.["iii.status_class"],
        p.value
      ])
    expect(rows).toEqual([
      ["http.server.request.duration", "GET", "/a", "2xx", 2],
      ["http.server.request.duration", "GET", "/a", "5xx", 1],
      ["http.server.request.duration", "GET", "/b", "none", 3],
      ["http.server.request.duration", "POST", "/a", "2xx", 1],
      ["http.client.request.duration", "GET", "/a", "2xx", 1]
    ])
    expect(points[0]?.sketch?.sum).toBe(4)
    expect(red.flush(20_000_000_000n)).toEqual([])
  })
})
