import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { pack, unpack } from "msgpackr"
import { WireError } from "../src/Errors.js"
import type { LogRecord, MetricPoint, Span, SpanId, TraceId } from "../src/Telemetry.js"
import * as WireProtocol from "../src/WireProtocol.js"
import { prng } from "./fixtures/prng.js"

const { decodeFrame, encodeFrame } = WireProtocol

const hexId = (rand: () => number, bytes: number) => {
  let s = ""
  for (let i = 0; i < bytes * 2; i++) s += Math.floor(rand() * 16).toString(16)
  return /^0+$/.test(s) ? `1${s.slice(1)}` : s
}

const makeSpan = (rand: () => number, i: number): Span => {
  const traceId = hexId(rand, 16) as TraceId
  const span: { -readonly [K in keyof Span]: Span[K] } = {
    traceId,
    spanId: hexId(rand, 8) as SpanId,
    correlationId: i % 4 === 0 ? `order-${i}` : traceId,
    service: "checkout",
    kind: i % 2 === 0 ? "server" : "client",
    name: "GET /users/{id}",
    startTimeUnixNano: 1_764_143_000_000_000_000n + BigInt(i),
    durationNano: Math.floor(rand() * 5e9),
    error: i % 7 === 0
  }
  if (i % 3 !== 0) span.parentSpanId = hexId(rand, 8) as SpanId
  if (i % 2 === 0) {
    span.component = "api"
    span.composition = "shop"
    span.namespace = "default"
    span.pod = `checkout-${i}`
    span.http = { method: "GET", route: "/users/{id}", path: `/users/${i}`, statusCode: 200 + (i % 4) * 100 }
    span.peerAddress = "10.0.0.12"
    span.peerPort = 40000 + i
    span.attributes = { "user_agent.original": "curl/8.5", "iii.retries": i % 3, "iii.cached": i % 5 === 0 }
  } else if (i % 5 === 1) {
    span.http = { method: "POST", route: "/orders" }
  }
  return span
}

const metric: MetricPoint = {
  name: "http.server.request.duration",
  kind: "distribution",
  service: "checkout",
  component: "api",
  timeUnixNano: 1_764_143_000_000_000_000n,
  intervalNano: 10_000_000_000,
  value: 42,
  sketch: { count: 42, sum: 1234.5, zeroCount: 1, offset: -3, counts: [1, 0, 5, 36] },
  attributes: { "http.route": "/users/{id}", "http.response.status_code": 200 }
}
const gauge: MetricPoint = {
  name: "iii.tcp.connections",
  kind: "gauge",
  service: "checkout",
  timeUnixNano: 5n,
  intervalNano: 0,
  value: 3.25
}
const log: LogRecord = {
  timeUnixNano: 1_764_143_000_000_000_123n,
  service: "checkout",
  pod: "checkout-0",
  level: "error",
  body: "payment declined: card expired",
  stream: "stderr",
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736" as TraceId,
  spanId: "00f067aa0ba902b7" as SpanId,
  correlationId: "order-7",
  attributes: { "log.file": "app.log" }
}
const bareLog: LogRecord = { timeUnixNano: 0n, service: "", level: "info", body: "" }

const batch = (spans: number, seed = 1): WireProtocol.Batch => {
  const rand = prng(seed).next
  return {
    type: "batch",
    seq: 7,
    spans: Array.from({ length: spans }, (_, i) => makeSpan(rand, i)),
    metrics: [metric, gauge],
    logs: [log, bareLog]
  }
}

const frames: ReadonlyArray<WireProtocol.Frame> = [
  { type: "hello", version: 1, agent: { id: "node-a/7f3c" } },
  {
    type: "hello",
    version: 1,
    agent: {
      id: "node-a/7f3c",
      service: "agent",
      pod: "iii-agent-x",
      node: "node-a",
      namespace: "iii",
      version: "0.1.0"
    },
    token: "s3cr3t"
  },
  { type: "welcome", version: 1, node: "obs-0" },
  { type: "welcome", version: 1, node: "obs-0", maxFrameBytes: 1 << 20 },
  batch(25),
  { type: "batch", seq: 1, spans: [], metrics: [], logs: [] },
  { type: "ack", seq: 1 },
  { type: "ack", seq: Number.MAX_SAFE_INTEGER },
  { type: "error", code: "unauthorized", message: "bad token", fatal: true },
  { type: "error", code: "invalid_batch", message: "spans[0].kind: ...", seq: 9, fatal: false }
]

const decodeOk = (bytes: Uint8Array) => Either.getOrThrowWith(decodeFrame(bytes), (e) => new Error(e.message))

const decodeErr = (bytes: Uint8Array, options?: WireProtocol.DecodeOptions): WireError => {
  const result = decodeFrame(bytes, options)
  if (Either.isRight(result)) throw new Error(`expected a failure, decoded ${result.right.type}`)
  return result.left
}

const revalidates = Schema.is(WireProtocol.Frame)

/** The frame's raw msgpack form, for crafting bad frames. */
const tupleOf = (frame: WireProtocol.Frame): Array<unknown> => unpack(Buffer.from(encodeFrame(frame)))

describe("round trip", () => {
  for (const frame of frames) {
    it(`${frame.type} ${frame.type === "batch" ? `(${frame.spans.length} spans)` : ""}`, () => {
      const decoded = decodeOk(encodeFrame(frame))
      expect(decoded).toEqual(frame)
      expect(revalidates(decoded)).toBe(true)
    })
  }

  it("carries ids as raw bytes, far smaller than JSON", () => {
    const b = batch(200)
    const tuple = tupleOf(b)
    expect(tuple.slice(0, 3)).toEqual([WireProtocol.PROTOCOL_VERSION, 3, 7])
    expect(tuple[3]).toBeInstanceOf(Uint8Array)
    expect((tuple[3] as Uint8Array).length).toBe(200 * 32)
    const json = JSON.stringify(b, (_, v) => (typeof v === "bigint" ? v.toString() : v))
    expect(encodeFrame(b).length).toBeLessThan(json.length / 2)
  })

  it("accepts a plain Uint8Array as well as a Buffer", () => {
    const bytes = encodeFrame(batch(3))
    expect(decodeOk(new Uint8Array(bytes))).toEqual(batch(3))
  })

  it("ignores trailing fields a later minor revision may append", () => {
    const t = tupleOf({ type: "ack", seq: 3 })
    expect(decodeOk(pack([...t, "future"]))).toEqual({ type: "ack", seq: 3 })
    const b = tupleOf(batch(2))
    // A span's known fields end with its OpenTelemetry status, events and links.
    ;(b[4] as Array<Array<unknown>>)[0]?.push(null, null, null, "future span field")
    expect(decodeOk(pack(b))).toEqual(batch(2))
  })
})

describe("rejections", () => {
  it("oversize, checked before decoding", () => {
    const bytes = encodeFrame(batch(50))
    const err = decodeErr(bytes, { maxFrameBytes: bytes.length - 1 })
    expect(err).toBeInstanceOf(WireError)
    expect(err._tag).toBe("WireError")
    expect(err.code).toBe("oversize")
    // garbage over the limit is oversize, not malformed: the limit comes first
    expect(decodeErr(new Uint8Array(100).fill(0xc1), { maxFrameBytes: 99 }).code).toBe("oversize")
    expect(decodeErr(new Uint8Array(WireProtocol.defaultMaxFrameBytes + 1)).code).toBe("oversize")
    expect(Either.isRight(decodeFrame(bytes, { maxFrameBytes: bytes.length }))).toBe(true)
  })

  it("truncated: every strict prefix of a frame", () => {
    for (const frame of [batch(3), frames[1], frames[9]] as const) {
      const bytes = encodeFrame(frame as WireProtocol.Frame)
      for (let n = 0; n < bytes.length; n++) {
        const err = decodeErr(bytes.subarray(0, n))
        expect([n, err.code]).toEqual([n, "truncated"])
      }
    }
  })

  it("unsupported version, in the envelope", () => {
    const t = tupleOf({ type: "ack", seq: 1 })
    expect(decodeErr(pack([2, ...t.slice(1)]))).toMatchObject({
      code: "unsupported_version",
      message: "unsupported protocol version 2 (this side speaks 1)"
    })
    expect(decodeErr(pack([300, ...t.slice(1)])).code).toBe("unsupported_version")
    // refused from the envelope prefix alone, even if the rest is unreadable to this version
    expect(decodeErr(Uint8Array.from([0x93, 0x02, 0x04, 0xc1])).code).toBe("unsupported_version")
  })

  const malformed: Record<string, [unknown, string]> = {
    "not an array": [{ type: "ack", seq: 1 }, "frame: expected an array, got a map"],
    "empty array": [[], "frame: expected at least 2 elements, got 0"],
    "non-numeric version": [["1", 4, 1], "frame: expected a protocol version, got string"],
    "unknown type": [[1, 9, 1], "type: unknown frame type 9"],
    "ack without seq": [[1, 4], "frame: expected at least 3 elements, got 2"],
    "ack with seq 0": [[1, 4, 0], "seq: expected a positive integer, got 0"],
    "ack with fractional seq": [[1, 4, 1.5], "seq: expected an integer, got 1.5"],
    "hello with empty agent id": [
      [1, 1, 1, ["", null, null, null, null, null], null],
      "agent.id: expected 1..256 characters, got 0"
    ],
    "hello with numeric pod": [
      [1, 1, 1, ["a", null, 7, null, null, null], null],
      "agent.pod: expected a string, got number"
    ],
    "hello with version 0": [
      [1, 1, 0, ["a", null, null, null, null, null], null],
      "version: expected a positive integer, got 0"
    ],
    "welcome without node": [[1, 2, 1, null, null], "node: expected a string, got nil"],
    "error with unknown code": [[1, 5, "teapot", "x", null, true], 'code: unknown error code "teapot"'],
    "error without fatal flag": [[1, 5, "protocol", "x", null, null], "fatal: expected a boolean, got nil"],
    "batch with invalid seq": [
      [1, 3, -1, new Uint8Array(0), [], [], new Uint8Array(0), []],
      "seq: expected a positive integer, got -1"
    ]
  }
  for (const [name, [value, message]] of Object.entries(malformed)) {
    it(`malformed: ${name}`, () => {
      expect(decodeErr(pack(value))).toMatchObject({ code: "malformed", message })
    })
  }

  it("deeply nested input is refused, not a crash", () => {
    const deep = Buffer.alloc(1 << 20, 0x91)
    deep.set([0x98, 0x01, 0x03, 0x01], 0)
    const err = decodeErr(deep)
    expect(err.code).toBe("malformed")
  })

  it("malformed: invalid MessagePack, trailing bytes, non-binary input", () => {
    expect(decodeErr(Uint8Array.from([0xc1])).code).toBe("malformed")
    const bytes = encodeFrame({ type: "ack", seq: 1 })
    expect(decodeErr(Buffer.concat([bytes, Uint8Array.from([0])])).code).toBe("malformed")
    expect(decodeErr("not bytes" as unknown as Uint8Array).code).toBe("malformed")
  })

  /** Element `i` of the list at `t[list]` of a batch tuple. */
  const at = (t: Array<unknown>, list: number, i: number) =>
    (t[list] as Array<Array<unknown>>)[i] as Array<unknown>

  /** Applies `mutate` to a decoded batch tuple and expects `invalid_batch` with `message`. */
  const invalidBatch: Record<string, [(t: Array<unknown>) => void, string]> = {
    "all-zero trace id": [
      (t) => (t[3] as Uint8Array).fill(0, 32, 48),
      "spans[1].traceId: must not be all zeros"
    ],
    "all-zero span id": [
      (t) => (t[3] as Uint8Array).fill(0, 16, 24),
      "spans[0].spanId: must not be all zeros"
    ],
    "short id blob": [
      (t) => (t[3] = (t[3] as Uint8Array).subarray(1)),
      "spanIds: expected 96 bytes (32 per span), got 95"
    ],
    "ids as a string": [(t) => (t[3] = "ab"), "spanIds: expected binary, got string"],
    "unknown span kind": [
      (t) => (at(t, 4, 2)[6] = 5),
      "spans[2].kind: expected one of 0..4 (server, client, internal, producer, consumer), got 5"
    ],
    "negative duration": [
      (t) => (at(t, 4, 0)[9] = -5),
      "spans[0].durationNano: expected a non-negative integer, got -5"
    ],
    "negative start time": [
      (t) => (at(t, 4, 0)[8] = -1n),
      "spans[0].startTimeUnixNano: expected unix nanoseconds (non-negative integer), got bigint"
    ],
    "empty correlation id": [
      (t) => (at(t, 4, 0)[0] = ""),
      "spans[0].correlationId: expected 1..256 characters, got 0"
    ],
    "http status as string": [
      (t) => (at(t, 4, 0)[10] = ["GET", "/", null, "200"]),
      "spans[0].http.statusCode: expected an integer, got string"
    ],
    "nested attribute value": [
      (t) => (at(t, 4, 0)[14] = { "a.b": { c: 1 } }),
      "spans[0].attributes.a.b: expected a string, number or boolean, got a map"
    ],
    "attributes as a date": [
      (t) => (at(t, 4, 0)[14] = new Date(0)),
      "spans[0].attributes: expected a map, got a Date"
    ],
    "short span tuple": [
      (t) => ((t[4] as Array<Array<unknown>>)[1] = [null]),
      "spans[1]: expected at least 15 elements, got 1"
    ],
    "spans not an array": [(t) => (t[4] = {}), "spans: expected an array, got a map"],
    "empty metric name": [(t) => (at(t, 5, 0)[0] = ""), "metrics[0].name: must not be empty"],
    "negative sketch count": [
      (t) => (((at(t, 5, 0)[10] as Array<unknown>)[4] as Array<number>)[2] = -1),
      "metrics[0].sketch.counts[2]: expected a non-negative integer, got -1"
    ],
    "unknown log level": [
      (t) => (at(t, 7, 1)[6] = 6),
      "logs[1].level: expected one of 0..5 (trace, debug, info, warn, error, fatal), got 6"
    ],
    "log ids blob too long": [
      (t) => (t[6] = new Uint8Array(49)),
      "logIds: expected 48 bytes (24 per log record), got 49"
    ]
  }
  for (const [name, [mutate, message]] of Object.entries(invalidBatch)) {
    it(`invalid_batch: ${name}`, () => {
      const t = tupleOf(batch(3))
      mutate(t)
      const err = decodeErr(pack(t))
      expect(err).toMatchObject({ code: "invalid_batch", message, seq: 7 })
      expect(WireProtocol.errorFrameFor(err)).toEqual({
        type: "error",
        code: "invalid_batch",
        message,
        seq: 7,
        fatal: false
      })
    })
  }
})

describe("errorFrameFor", () => {
  it("makes undecodable frames fatal and batch-level problems not", () => {
    const fatal = (code: WireProtocol.WireErrorCode, seq?: number) =>
      WireProtocol.errorFrameFor(
        new WireError(seq === undefined ? { code, message: "m" } : { code, message: "m", seq })
      ).fatal
    for (const code of [
      "malformed",
      "truncated",
      "oversize",
      "unsupported_version",
      "unauthorized",
      "protocol"
    ] as const)
      expect([code, fatal(code)]).toEqual([code, true])
    expect(fatal("invalid_batch", 3)).toBe(false)
    expect(fatal("overloaded", 3)).toBe(false)
    expect(fatal("internal", 3)).toBe(false)
    expect(fatal("internal")).toBe(true)
    // the error frame itself travels
    const frame = WireProtocol.errorFrameFor(
      new WireError({ code: "overloaded", message: "slow down", seq: 4 })
    )
    expect(decodeOk(encodeFrame(frame))).toEqual(frame)
  })
})

describe("encodeFrame", () => {
  it("refuses ids that are not hex of the right length, naming the field", () => {
    const good = batch(3)
    const bad = (patch: Partial<Span>, at = 1): WireProtocol.Batch => ({
      ...good,
      spans: good.spans.map((s, i) => (i === at ? { ...s, ...patch } : s))
    })
    expect(() => encodeFrame(bad({ traceId: "abc" as TraceId }))).toThrow(
      /spans\[1\]\.traceId must be 32 hex/
    )
    expect(() => encodeFrame(bad({ spanId: "zzzzzzzzzzzzzzzz" as SpanId }))).toThrow(
      /spans\[1\]\.spanId must be 16 hex/
    )
    expect(() => encodeFrame({ ...good, logs: [{ ...log, spanId: "00f0" as SpanId }] })).toThrow(
      /logs\[0\]\.spanId/
    )
    // Nothing of the refused frames is left in the next one.
    expect(decodeOk(encodeFrame(good))).toEqual(good)
  })

  it("gives each frame bytes of its own, which later frames do not overwrite", () => {
    const first = batch(20, 1)
    const bytes = encodeFrame(first)
    const copy = Buffer.from(bytes)
    encodeFrame(batch(40, 2))
    encodeFrame({ type: "ack", seq: 9 })
    expect(Buffer.from(bytes).equals(copy)).toBe(true)
    expect(decodeOk(bytes)).toEqual(first)
  })
})

describe("BatchEncoder", () => {
  const encodeItems = (encoder: WireProtocol.BatchEncoder, frame: WireProtocol.Batch) => {
    for (const span of frame.spans) encoder.addSpan(span)
    for (const point of frame.metrics) encoder.addMetric(point)
    for (const record of frame.logs) encoder.addLog(record)
    return encoder.finish(frame.seq)
  }

  // Sizes on both sides of msgpack's header boundaries (fixarray < 16, array16, bin8 < 256 bytes).
  for (const spans of [0, 1, 7, 8, 15, 16, 300, 2100]) {
    it(`gives exactly encodeFrame's bytes (${spans} spans), batch after batch`, () => {
      const encoder = new WireProtocol.BatchEncoder()
      for (const seed of [1, 2]) {
        const frame = { ...batch(spans, seed), seq: 1000 + seed }
        const bytes = encodeItems(encoder, frame)
        expect(Buffer.from(bytes).equals(Buffer.from(encodeFrame(frame)))).toBe(true)
        expect(decodeOk(bytes)).toEqual(frame)
        expect(encoder.items).toBe(0)
      }
    })
  }

  it("refuses a bad id naming the field, and keeps the batch it was building intact", () => {
    const encoder = new WireProtocol.BatchEncoder()
    const good = batch(3)
    encoder.addSpan(good.spans[0] as Span)
    expect(() => encoder.addSpan({ ...(good.spans[1] as Span), spanId: "zz" as SpanId })).toThrow(
      /spans\[1\]\.spanId must be 16 hex/
    )
    expect(() =>
      encoder.addSpan({ ...(good.spans[1] as Span), parentSpanId: "0g".repeat(8) as SpanId })
    ).toThrow(/spans\[1\]\.parentSpanId must be 16 hex/)
    expect(() => encoder.addLog({ ...log, traceId: "4bf9" as TraceId })).toThrow(/logs\[0\]\.traceId/)
    for (const span of good.spans.slice(1)) encoder.addSpan(span)
    const frame: WireProtocol.Batch = { ...good, metrics: [], logs: [] }
    expect(decodeOk(encoder.finish(frame.seq))).toEqual(frame)
  })
})

describe("fuzz: decodeFrame never throws", () => {
  it("survives 12,000 random, mutated, truncated and spliced frames; what it accepts re-validates", () => {
    const rand = prng(0x5eed).next
    const int = (n: number) => Math.floor(rand() * n)
    const seeds = frames.map((f) => Buffer.from(encodeFrame(f)))
    const pick = () => seeds[int(seeds.length)] as Buffer
    const mutations: Array<(b: Buffer) => Uint8Array> = [
      // random bytes, sometimes starting like a v1 envelope
      () => {
        const b = Buffer.alloc(int(300))
        for (let i = 0; i < b.length; i++) b[i] = int(256)
        if (b.length > 2 && rand() < 0.5) b.set([0x90 + int(9), 0x01, 1 + int(5)])
        return b
      },
      // bit flips
      (b) => {
        const c = Buffer.from(b)
        for (let k = 1 + int(4); k > 0; k--) {
          const at = int(c.length)
          c[at] = (c[at] ?? 0) ^ (1 << int(8))
        }
        return c
      },
      // byte overwrites with msgpack type markers
      (b) => {
        const c = Buffer.from(b)
        const markers = [
          0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xcc, 0xcf, 0xd3, 0xd4, 0xd9, 0xdc, 0xdd, 0xde, 0xff, 0x7f, 0x00
        ]
        c[int(c.length)] = markers[int(markers.length)] ?? 0
        return c
      },
      // truncation
      (b) => b.subarray(0, int(b.length)),
      // splice two frames
      (b) => Buffer.concat([b.subarray(0, int(b.length)), ((o) => o.subarray(int(o.length)))(pick())]),
      // structure-aware: replace one element of a valid tuple with a random value
      (b) => {
        const t = unpack(b) as Array<unknown>
        const values = [
          null,
          -1,
          0,
          2 ** 40,
          1.5,
          "",
          "x",
          true,
          new Uint8Array(3),
          [],
          {},
          [null],
          2n ** 63n - 1n
        ]
        const target =
          rand() < 0.5 || !Array.isArray(t[4]) || t[4].length === 0
            ? t
            : ((t[4] as Array<unknown>)[int((t[4] as Array<unknown>).length)] as Array<unknown>)
        if (Array.isArray(target)) target[int(target.length)] = values[int(values.length)]
        return pack(t)
      }
    ]
    let accepted = 0
    let rejected = 0
    const codes = new Set<string>()
    for (let i = 0; i < 12_000; i++) {
      const input = (mutations[i % mutations.length] as (b: Buffer) => Uint8Array)(pick())
      let result: Either.Either<WireProtocol.Frame, WireError> | undefined
      expect(() => {
        result = decodeFrame(input, { maxFrameBytes: 4096 + int(8192) })
      }).not.toThrow()
      if (result === undefined) throw new Error("unreachable")
      if (Either.isRight(result)) {
        accepted++
        expect(revalidates(result.right)).toBe(true)
        expect(decodeOk(encodeFrame(result.right))).toEqual(result.right)
      } else {
        rejected++
        expect(result.left).toBeInstanceOf(WireError)
        codes.add(result.left.code)
      }
    }
    console.info(`fuzz: ${accepted} accepted, ${rejected} rejected`)
    expect(accepted + rejected).toBe(12_000)
    expect(rejected).toBeGreaterThan(6_000)
    expect(accepted).toBeGreaterThan(500)
    expect(codes).toEqual(
      new Set(["malformed", "truncated", "oversize", "unsupported_version", "invalid_batch"])
    )
  })
})
