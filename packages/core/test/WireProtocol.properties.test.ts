/**
 * Properties of the wire codec, over frames generated from the protocol's own schemas (fast-check,
 * through effect's Arbitrary): every frame the schemas allow encodes, and decodes to itself, and a
 * batch built item by item is byte for byte the batch frame.
 */
import { Arbitrary, Either, FastCheck as fc } from "effect"
import { describe, expect, it } from "vitest"
import * as WireProtocol from "../src/WireProtocol.js"

/** Whether any attribute map in the frame has the key `__proto__` (renamed on decoding, see below). */
const hasProtoKey = (value: unknown): boolean =>
  typeof value === "object" &&
  value !== null &&
  (Object.hasOwn(value, "__proto__") || Object.values(value).some(hasProtoKey))

const frames = Arbitrary.make(WireProtocol.Frame).filter((frame) => !hasProtoKey(frame))

/** msgpack writes an integral double as an integer, which has no -0: -0 comes back as 0, the same number. */
const zeroSigned = (value: unknown): unknown =>
  Object.is(value, -0)
    ? 0
    : Array.isArray(value)
      ? value.map(zeroSigned)
      : typeof value === "object" && value !== null
        ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, zeroSigned(v)]))
        : value
const batches = Arbitrary.make(WireProtocol.Batch)

describe("wire codec properties", () => {
  it("decodeFrame(encodeFrame(frame)) is the frame, for every frame the schemas allow", () => {
    fc.assert(
      fc.property(frames, (frame) => {
        const decoded = WireProtocol.decodeFrame(WireProtocol.encodeFrame(frame), { maxFrameBytes: 1 << 30 })
        // toEqual: an optional field given as undefined comes back absent, which is the same value.
        expect(zeroSigned(Either.getOrThrow(decoded))).toEqual(zeroSigned(frame))
      }),
      { numRuns: 500 }
    )
  })

  // Found by the property above: an attribute keyed `__proto__` comes back as `__proto_`. That is
  // msgpackr's guard, kept: no frame reaches an object's prototype.
  it("an attribute keyed __proto__ arrives renamed, and no prototype is touched", () => {
    const attributes = JSON.parse('{"__proto__": "x", "http.route": "/"}') as Record<string, string>
    const batch = Arbitrary.make(WireProtocol.Batch)
    const [sample] = fc.sample(
      batch.filter((b) => b.spans.length > 0),
      { numRuns: 1, seed: 7 }
    )
    if (sample === undefined) throw new Error("no sample")
    const frame = { ...sample, spans: sample.spans.map((s) => ({ ...s, attributes })) }
    const decoded = Either.getOrThrow(WireProtocol.decodeFrame(WireProtocol.encodeFrame(frame)))
    const span = decoded.type === "batch" ? decoded.spans[0] : undefined
    expect(span?.attributes).toEqual({ __proto_: "x", "http.route": "/" })
    expect(Object.getPrototypeOf(span?.attributes)).toBe(Object.prototype)
  })

  it("BatchEncoder's bytes are encodeFrame's, for every batch", () => {
    fc.assert(
      fc.property(batches, (batch) => {
        const encoder = new WireProtocol.BatchEncoder()
        for (const span of batch.spans) encoder.addSpan(span)
        for (const point of batch.metrics) encoder.addMetric(point)
        for (const log of batch.logs) encoder.addLog(log)
        expect(Buffer.from(encoder.finish(batch.seq))).toEqual(Buffer.from(WireProtocol.encodeFrame(batch)))
      }),
      { numRuns: 300 }
    )
  })
})
