import { describe, expect, it } from "vitest"
import * as SpanTree from "../src/SpanTree.js"

const s = (
  spanId: string,
  service: string,
  kind: string,
  start: number,
  duration: number,
  parentSpanId?: string
) => ({
  spanId,
  service,
  kind,
  startTimeUnixNano: String(start * 1_000_000),
  durationNano: duration * 1_000_000,
  ...(parentSpanId !== undefined && { parentSpanId })
})

describe("SpanTree", () => {
  // frontend's request; its call to catalog answered by a linked span, its call to payments answered
  // by a span whose parent (the caller's incoming context) was never captured.
  const front = s("f", "frontend", "server", 0, 100, "gone")
  const toCatalog = s("c1", "frontend", "client", 5, 20, "f")
  const catalog = s("c2", "catalog", "server", 6, 18, "c1")
  const toPayments = s("p1", "frontend", "client", 30, 60, "f")
  const payments = s("p2", "payments", "server", 31, 58, "gone")

  it("finds each server span's caller: its parent client span, else the enclosing call of another service", () => {
    const found = SpanTree.callers([front, toCatalog, catalog, toPayments, payments])
    expect(found.get(catalog)).toBe(toCatalog)
    expect(found.get(payments)).toBe(toPayments)
    expect(found.has(front)).toBe(false)
  })

  it("orders a waterfall: parents first, siblings by start, inferred callers marked", () => {
    const rows = SpanTree.order([payments, catalog, toPayments, front, toCatalog])
    expect(rows.map((r) => `${"  ".repeat(r.depth)}${r.span.spanId}${r.inferred ? "~" : ""}`)).toEqual([
      "f",
      "  c1",
      "    c2",
      "  p1",
      "    p2~"
    ])
  })

  it("a trace's extent: the earliest start to the latest end", () => {
    expect(SpanTree.extent([toPayments, front, catalog])).toEqual({ start: 0n, end: 100_000_000n })
    expect(SpanTree.extent([])).toEqual({ start: 0n, end: 0n })
  })

  it("gives a call to one server span only, and loses no span to a cycle", () => {
    const call = s("x", "a", "client", 0, 50)
    const first = s("y", "b", "server", 10, 5, "gone")
    const second = s("z", "b", "server", 20, 5, "gone")
    expect(SpanTree.callers([call, first, second]).size).toBe(1)
    const loop = [s("l1", "a", "server", 0, 5, "l2"), s("l2", "a", "server", 1, 5, "l1")]
    expect(SpanTree.order(loop).map((r) => r.span.spanId)).toEqual(["l1", "l2"])
  })
})
