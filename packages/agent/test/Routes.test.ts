import { describe, expect, it } from "vitest"
import { normalise, overflowRoute, pathOf, RouteTable } from "../src/internal/Routes.js"

describe("Routes", () => {
  it.each([
    ["/users/123", "/users/{id}"],
    ["/users/123/orders/9?expand=1#top", "/users/{id}/orders/{id}"],
    ["/items/3f2a8c1e-9b7d-4e2f-8a1b-0c9d8e7f6a5b", "/items/{id}"],
    ["/objects/5f1d7a3b9c2e4f6a8b0c1d2e", "/objects/{id}"],
    ["/blobs/deadbeef12", "/blobs/{id}"],
    ["/keys/AKIAIOSFODNN7EXAMPLE42", "/keys/{id}"],
    ["/v2/users/me", "/v2/users/me"],
    ["/static/application.js", "/static/application.js"],
    ["/feed", "/feed"],
    ["/api/health-check", "/api/health-check"],
    ["/", "/"],
    ["", "/"],
    ["?q=1", "/"],
    ["*", "*"],
    ["http://example.test:8080/users/42?x", "/users/{id}"],
    [`/t/${"a".repeat(70)}`, "/t/{id}"],
    ["/a/b/c/d/e/f/g/h/i/j/k/l/m/n", "/a/b/c/d/e/f/g/h/i/j/k/l/{rest}"]
  ])("%s → %s", (target, route) => {
    expect(normalise(target)).toBe(route)
  })

  it("drops the query from paths", () => {
    expect(pathOf("/search?q=a/b")).toBe("/search")
  })

  it("bounds cardinality: routes beyond the cap become {other}", () => {
    const table = new RouteTable(3)
    expect(["/a", "/b", "/c", "/d", "/a", "/e"].map((t) => table.route(t))).toEqual([
      "/a",
      "/b",
      "/c",
      overflowRoute,
      "/a",
      overflowRoute
    ])
    expect(table.size).toBe(3)
    expect(table.overflowed).toBe(2)
    // Ids do not count as new routes.
    const ids = new RouteTable(2)
    for (let i = 0; i < 1000; i++) ids.route(`/users/${i}`)
    expect(ids.size).toBe(1)
  })
})
