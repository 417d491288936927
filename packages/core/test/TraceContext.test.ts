import { describe, expect, it } from "@effect/vitest"
import { Option } from "effect"
import * as TraceContext from "../src/TraceContext.js"

const { parseTraceParent, formatTraceParent, parseTraceState, formatTraceState } = TraceContext

const TRACE = "12345678901234567890123456789012"
const SPAN = "1234567890123456"
const valid = `00-${TRACE}-${SPAN}-01`

// Cases from the W3C Trace Context spec and its conformance suite (w3c/trace-context test/test.py).
describe("parseTraceParent", () => {
  it("parses the spec's examples", () => {
    expect(parseTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).toEqual(
      Option.some({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", flags: 1 })
    )
    expect(parseTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")).toEqual(
      Option.some({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", flags: 0 })
    )
  })

  it("ignores optional whitespace around the value", () => {
    for (const v of [` ${valid}`, `\t${valid}`, `${valid} `, `${valid}\t`, `\t ${valid} \t`]) {
      expect(Option.map(parseTraceParent(v), (p) => p.traceId)).toEqual(Option.some(TRACE))
    }
  })

  it("accepts future versions per the forward-compatibility rules", () => {
    expect(parseTraceParent(`cc-${TRACE}-${SPAN}-01`)).toEqual(
      Option.some({ traceId: TRACE, spanId: SPAN, flags: 1 })
    )
    expect(Option.isSome(parseTraceParent(`cc-${TRACE}-${SPAN}-01-what-the-future-will-be-like`))).toBe(true)
    // unknown flag bits from a future version are not trusted
    expect(Option.map(parseTraceParent(`cc-${TRACE}-${SPAN}-ff`), (p) => p.flags)).toEqual(Option.some(3))
  })

  const invalid: Record<string, string> = {
    "version 00 with trailing characters": `${valid}.`,
    "version 00 with extra fields": `${valid}-what-the-future-will-be-like`,
    "future version with a non-dash after flags": `cc-${TRACE}-${SPAN}-01.what-the-future-will-be-like`,
    "version ff": `ff-${TRACE}-${SPAN}-01`,
    "illegal version characters (1)": `.0-${TRACE}-${SPAN}-01`,
    "illegal version characters (2)": `0.-${TRACE}-${SPAN}-01`,
    "version too long (3)": `000-${TRACE}-${SPAN}-01`,
    "version too long (4)": `0000-${TRACE}-${SPAN}-01`,
    "version too short": `0-${TRACE}-${SPAN}-01`,
    "uppercase version": `0A-${TRACE}-${SPAN}-01`,
    "all-zero trace id": `00-00000000000000000000000000000000-${SPAN}-01`,
    "illegal trace id character (first)": `00-.2345678901234567890123456789012-${SPAN}-01`,
    "illegal trace id character (last)": `00-1234567890123456789012345678901.-${SPAN}-01`,
    "uppercase trace id": `00-4BF92F3577B34DA6A3CE929D0E0E4736-${SPAN}-01`,
    "trace id too long": `00-123456789012345678901234567890123-${SPAN}-01`,
    "trace id too short": `00-1234567890123456789012345678901-${SPAN}-01`,
    "all-zero parent id": `00-${TRACE}-0000000000000000-01`,
    "illegal parent id character (first)": `00-${TRACE}-.234567890123456-01`,
    "illegal parent id character (last)": `00-${TRACE}-123456789012345.-01`,
    "uppercase parent id": `00-${TRACE}-00F067AA0BA902B7-01`,
    "parent id too long": `00-${TRACE}-12345678901234567-01`,
    "parent id too short": `00-${TRACE}-123456789012345-01`,
    "illegal flags character (first)": `00-${TRACE}-${SPAN}-.0`,
    "illegal flags character (last)": `00-${TRACE}-${SPAN}-0.`,
    "uppercase flags": `00-${TRACE}-${SPAN}-0A`,
    "flags too long": `00-${TRACE}-${SPAN}-001`,
    "flags too short": `00-${TRACE}-${SPAN}-1`,
    "future version shorter than 55": `cc-${TRACE}-${SPAN}-1`,
    empty: "",
    garbage: "not a traceparent at all, but long enough to reach fifty-five characters"
  }
  for (const [name, value] of Object.entries(invalid)) {
    it(`rejects ${name}`, () => {
      expect(parseTraceParent(value)).toEqual(Option.none())
    })
  }

  it("rejects a repeated traceparent header", () => {
    expect(parseTraceParent([valid, `00-${TRACE.replace("1", "9")}-${SPAN}-01`])).toEqual(Option.none())
    expect(Option.isSome(parseTraceParent([valid]))).toBe(true)
    expect(parseTraceParent(undefined)).toEqual(Option.none())
  })

  it("formats version 00 and round-trips", () => {
    const parsed = Option.getOrThrow(parseTraceParent(valid))
    expect(formatTraceParent(parsed)).toBe(valid)
    // a future version is downgraded to 00
    const future = Option.getOrThrow(parseTraceParent(`cc-${TRACE}-${SPAN}-01-more`))
    expect(formatTraceParent(future)).toBe(valid)
  })
})

describe("ids and derived contexts", () => {
  it("generates well-formed, distinct random ids", () => {
    const traces = new Set(Array.from({ length: 1000 }, TraceContext.newTraceId))
    const spans = new Set(Array.from({ length: 1000 }, TraceContext.newSpanId))
    expect(traces.size).toBe(1000)
    expect(spans.size).toBe(1000)
    for (const t of traces) expect(TraceContext.isTraceId(t)).toBe(true)
    for (const s of spans) expect(TraceContext.isSpanId(s)).toBe(true)
  })

  it("puts the time in a trace id's first 6 bytes, so ids sort by when they were minted", () => {
    const at = Date.UTC(2026, 10, 26, 10, 0, 0, 123)
    const id = TraceContext.newTraceId(at)
    expect(Number.parseInt(id.slice(0, 12), 16)).toBe(at)
    const ids = [at + 5, at + 1, at + 1000, at].map((t) => TraceContext.newTraceId(t))
    expect([...ids].sort()).toEqual([ids[3], ids[1], ids[0], ids[2]])
    // The 10 random bytes (Level 2 asks for 7) differ between ids of the same millisecond.
    expect(new Set(Array.from({ length: 100 }, () => TraceContext.newTraceId(at).slice(12))).size).toBe(100)
  })

  it("a child keeps the trace and known flags, with a new span id and reserved bits cleared", () => {
    const parent = { ...Option.getOrThrow(parseTraceParent(valid)), flags: 0xff }
    const c = TraceContext.child(parent)
    expect(c.traceId).toBe(parent.traceId)
    expect(c.spanId).not.toBe(parent.spanId)
    expect(TraceContext.isSpanId(c.spanId)).toBe(true)
    expect(c.flags).toBe(TraceContext.FLAG_SAMPLED | TraceContext.FLAG_RANDOM)
    expect(TraceContext.child({ ...parent, flags: 0 }).flags).toBe(0)
  })

  it("a root context is sampled and random unless told otherwise", () => {
    const r = TraceContext.root()
    expect(TraceContext.isSampled(r)).toBe(true)
    expect(r.flags & TraceContext.FLAG_RANDOM).toBe(TraceContext.FLAG_RANDOM)
    expect(TraceContext.isSampled(TraceContext.root({ sampled: false }))).toBe(false)
    expect(Option.isSome(parseTraceParent(formatTraceParent(r)))).toBe(true)
  })
})

describe("parseTraceState", () => {
  const entries = (v: string | ReadonlyArray<string>) => Option.getOrThrow(parseTraceState(v))

  it("parses the spec's examples and keeps order across header fields", () => {
    expect(entries("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")).toEqual([
      ["rojo", "00f067aa0ba902b7"],
      ["congo", "t61rcWkgMzE"]
    ])
    expect(entries(["foo=1,bar=2", "rojo=1,congo=2", "baz=3"]).map(([k]) => k)).toEqual([
      "foo",
      "bar",
      "rojo",
      "congo",
      "baz"
    ])
  })

  it("accepts empty headers and members, and optional whitespace", () => {
    expect(entries("")).toEqual([])
    expect(entries(["foo=1", ""])).toEqual([["foo", "1"]])
    expect(entries(["", "foo=1"])).toEqual([["foo", "1"]])
    expect(entries("foo=1 \t , \t bar=2, \t baz=3")).toEqual([
      ["foo", "1"],
      ["bar", "2"],
      ["baz", "3"]
    ])
    expect(entries("\t foo=1 \t")).toEqual([["foo", "1"]])
  })

  it("accepts every allowed character", () => {
    const key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
    let value = ""
    for (let c = 0x20; c <= 0x7e; c++) if (c !== 0x2c && c !== 0x3d) value += String.fromCharCode(c)
    expect(entries(`${key}=${value}`)).toEqual([[key, value]])
    expect(entries(`${key}@a-z0-9_-*/=${value}`)).toEqual([[`${key}@a-z0-9_-*/`, value]])
  })

  it("enforces the member count and key length limits", () => {
    const members = (n: number) => Array.from({ length: n }, (_, i) => `bar${i}=${i}`).join(",")
    expect(entries(members(32))).toHaveLength(32)
    expect(parseTraceState(members(33))).toEqual(Option.none())
    expect(entries(["foo=1", `${"z".repeat(256)}=1`])).toHaveLength(2)
    expect(entries(["foo=1", `${"t".repeat(241)}@${"v".repeat(14)}=1`])).toHaveLength(2)
  })

  const invalid: Record<string, string | ReadonlyArray<string>> = {
    "duplicate keys": "foo=1,foo=1",
    "duplicate keys with different values": "foo=1,foo=2",
    "duplicate keys across headers": ["foo=1", "foo=2"],
    "space in key": "foo =1",
    "uppercase key": "FOO=1",
    "dot in key": "foo.bar=1",
    "empty system id": "foo@=1,bar=2",
    "empty tenant id": "@foo=1,bar=2",
    "double at": "foo@@bar=1,bar=2",
    "two ats": "foo@bar@baz=1,bar=2",
    "key of 257 characters": ["foo=1", `${"z".repeat(257)}=1`],
    "tenant of 242 characters": ["foo=1", `${"t".repeat(242)}@v=1`],
    "system of 15 characters": ["foo=1", `t@${"v".repeat(15)}=1`],
    "equals sign in value": "foo=bar=baz",
    "empty value": "foo=,bar=3",
    "member without equals sign": "foo",
    "non-ASCII value": "foo=bär"
  }
  for (const [name, value] of Object.entries(invalid)) {
    it(`discards the list on ${name}`, () => {
      expect(parseTraceState(value)).toEqual(Option.none())
    })
  }

  it("formats and updates entries, moving the modified key to the left", () => {
    const state = entries("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    const updated = TraceContext.setTraceStateEntry(state, "rojo", "b9c7c989f97918e1")
    expect(formatTraceState(updated)).toBe("rojo=b9c7c989f97918e1,congo=t61rcWkgMzE")
    expect(TraceContext.setTraceStateEntry(state, "BAD", "x")).toBe(state)
    const full = entries(Array.from({ length: 32 }, (_, i) => `k${i}=${i}`).join(","))
    const pushed = TraceContext.setTraceStateEntry(full, "iii", "1")
    expect(pushed).toHaveLength(32)
    expect(pushed[0]).toEqual(["iii", "1"])
    expect(pushed.some(([k]) => k === "k31")).toBe(false)
  })
})

describe("correlation id", () => {
  const traceId = TraceContext.newTraceId()

  it("is the trace id unless the header carries one", () => {
    expect(TraceContext.correlationIdFor(traceId, undefined)).toBe(traceId)
    expect(TraceContext.correlationIdFor(traceId, "order-4711")).toBe("order-4711")
    expect(TraceContext.correlationIdFor(traceId, ["  order 4711\t", "other"])).toBe("order 4711")
  })

  it("ignores invalid header values", () => {
    for (const bad of ["", "   ", "x".repeat(257), "line\nbreak", "caf\u00e9", "nul\u0000"]) {
      expect(TraceContext.parseCorrelationId(bad)).toEqual(Option.none())
      expect(TraceContext.correlationIdFor(traceId, bad)).toBe(traceId)
    }
    expect(TraceContext.parseCorrelationId("x".repeat(256))).toEqual(Option.some("x".repeat(256)))
  })
})

describe("extract and serverContext", () => {
  it("continues the caller's trace, header names in any case", () => {
    const incoming = TraceContext.extract({
      TraceParent: valid,
      TRACESTATE: "foo=1",
      "X-III-Correlation-Id": "checkout-42",
      host: "example"
    })
    const ctx = TraceContext.serverContext(incoming)
    expect(ctx.traceId).toBe(TRACE)
    expect(ctx.parentSpanId).toEqual(Option.some(SPAN))
    expect(ctx.spanId).not.toBe(SPAN)
    expect(ctx.flags).toBe(1)
    expect(ctx.correlationId).toBe("checkout-42")
    expect(ctx.traceState).toEqual([["foo", "1"]])
  })

  it("starts a new trace on a missing, invalid or repeated traceparent and drops tracestate", () => {
    const cases = [
      { tracestate: "foo=1" },
      { traceparent: `00-00000000000000000000000000000000-${SPAN}-01`, tracestate: "foo=1" },
      { traceparent: [valid, valid] },
      { traceparent: `${valid}, ${valid}` }
    ]
    for (const headers of cases) {
      const ctx = TraceContext.serverContext(TraceContext.extract(headers))
      expect(ctx.traceId).not.toBe(TRACE)
      expect(TraceContext.isTraceId(ctx.traceId)).toBe(true)
      expect(ctx.parentSpanId).toEqual(Option.none())
      expect(ctx.correlationId).toBe(ctx.traceId)
      expect(ctx.traceState).toEqual([])
    }
  })

  it("keeps traceparent when only tracestate is malformed", () => {
    const ctx = TraceContext.serverContext(
      TraceContext.extract({ traceparent: valid, tracestate: "foo=1,foo=2" })
    )
    expect(ctx.traceId).toBe(TRACE)
    expect(ctx.traceState).toEqual([])
  })
})
