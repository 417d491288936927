/**
 * Properties of the wire codec, over frames generated from the protocol's own schemas (fast-check,
 * through effect's Arbitrary): every frame the schemas allow encodes, and decodes to itself, and a
 * batch built item by item is byte for byte the batch frame.
 */
import { Arbitrary, Either, FastCheck as fc } from "effect"
import { describe, expect, it } from "vitest"
import * as WireProtocol from "../src/WireProtocol.js"

const frames = Arbitrary.make(WireProtocol.Frame)

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
