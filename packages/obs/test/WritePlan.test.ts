import { Msgpack } from "@iii/core"
import { Unpackr } from "msgpackr"
import { toBufferKey } from "ordered-binary"
import { describe, expect, it } from "vitest"
import {
  correlationKey,
  durationBand,
  micros,
  plannedDbs,
  serviceBucket,
  spanBucket,
  spanIdsOffset,
  spanKey,
  traceIndexKeyBytes
} from "../src/internal/lmdb/Keys.js"
import * as SpanRecord from "../src/internal/lmdb/SpanRecord.js"
import { planBatch } from "../src/internal/lmdb/WritePlan.js"
import { batch, span, t0 } from "./fixtures/Spans.js"

const unpackr = new Unpackr({ useRecords: false })

/** The plan's entries as [db, key, value] triples. */
const entries = (plan: ReturnType<typeof planBatch>) => {
  const out: Array<[number, Uint8Array, Uint8Array]> = []
  let offset = 0
  for (let t = 0; t < plan.table.length; t += 3) {
    const [db = 0, keyLength = 0, valueLength = 0] = plan.table.subarray(t, t + 3)
    out.push([
      db,
      plan.bytes.subarray(offset, offset + keyLength),
      plan.bytes.subarray(offset + keyLength, offset + keyLength + valueLength)
    ])
    offset += keyLength + valueLength
  }
  return out
}

describe("SpanRecord", () => {
  it("gives back every field of a span, exact nanoseconds included", () => {
    const full = span({
      trace: 1,
      parentSpanId: "00000000000000aa" as never,
      correlationId: "order-7",
      startTimeUnixNano: t0 + 123_456_789n,
      peerAddress: "10.0.0.1",
      peerPort: 5432,
      kind: "client",
      error: true,
      http: { method: "POST", route: "/pay", statusCode: 503 },
      attributes: { "db.system": "postgresql", retries: 2, cached: false }
    })
    const { component: _component, http: _http, ...bare } = span({ trace: 2 })
    for (const s of [full, bare]) {
      const w = new Msgpack.Writer(0)
      SpanRecord.write(w, s)
      expect(SpanRecord.decode(s.traceId, s.spanId, w.bytes.subarray(0, w.position))).toEqual(s)
    }
  })
})

describe("WritePlan", () => {
  it("writes the keys lmdb itself would write (ordered-binary, null-terminated): span entries in span order, each run of a trace's spans in one bucket followed by its trace index entry, then one block per service and bucket, then per status class, duration band and bucket, each keyed by its first span", () => {
    const a = span({
      trace: 10,
      correlationId: "order-1",
      http: { method: "GET", route: "/x", statusCode: 500 },
      error: true,
      startTimeUnixNano: t0 + 5_000n
    })
    const b = span({ trace: 11, startTimeUnixNano: t0 + 7_000n })
    // b's trace again, in the same bucket, then in a later one.
    const b2 = span({ trace: 11, startTimeUnixNano: t0 + 8_000n, spanId: "00000000000000b2" as never })
    const b3 = span({ trace: 11, startTimeUnixNano: t0 + 150_000_000n, spanId: "00000000000000b3" as never })
    const c = span({ trace: 12, service: "payments", startTimeUnixNano: t0 + 250_000_000n })
    const plan = planBatch(batch("agent", 3, [a, b, b2, b3, c]))
    const all = entries(plan)
    expect(all.map(([db]) => plannedDbs[db])).toEqual([
      "spans",
      "traceIndex",
      "byCorrelation",
      "spans",
      "spans",
      "traceIndex",
      "spans",
      "traceIndex",
      "spans",
      "traceIndex",
      "byService",
      "byService",
      "byService",
      "byStatus"
    ])
    const [spanEntry, indexEntry] = all
    expect(Buffer.from(spanEntry?.[1] ?? [])).toEqual(toBufferKey([...spanKey(a)]))
    expect(
      Buffer.from(spanEntry?.[1] ?? [])
        .subarray(spanIdsOffset)
        .toString("latin1")
    ).toBe(`${a.traceId}\u0000${a.spanId}`)
    expect(SpanRecord.decode(a.traceId, a.spanId, spanEntry?.[2] ?? new Uint8Array())).toEqual(a)
    const indexKey = Buffer.alloc(traceIndexKeyBytes)
    Buffer.from(a.traceId, "hex").copy(indexKey, 4)
    indexKey.writeUIntBE(spanBucket(micros(a.startTimeUnixNano)), 20, 6)
    expect(Buffer.from(indexEntry?.[1] ?? [])).toEqual(indexKey)
    expect(indexEntry?.[2]?.length).toBe(0)
    const bucket = (s: typeof a) => serviceBucket(micros(s.startTimeUnixNano))
    const [checkout, , payments, errors] = all.slice(10)
    expect(Buffer.from(checkout?.[1] ?? [])).toEqual(
      toBufferKey(["checkout", bucket(a), a.traceId, a.spanId])
    )
    expect(Buffer.from(payments?.[1] ?? [])).toEqual(
      toBufferKey(["payments", bucket(c), c.traceId, c.spanId])
    )
    expect(unpackr.unpack(checkout?.[2] ?? new Uint8Array())).toEqual([
      ...[micros(a.startTimeUnixNano), a.traceId, a.spanId, "/x", 500, a.durationNano, 1, "order-1"],
      ...[micros(b.startTimeUnixNano), b.traceId, b.spanId, "/cart/{id}", 200, b.durationNano, 0, ""],
      ...[micros(b2.startTimeUnixNano), b2.traceId, b2.spanId, "/cart/{id}", 200, b2.durationNano, 0, ""]
    ])
    expect(Buffer.from(errors?.[1] ?? [])).toEqual(
      toBufferKey(["5xx", durationBand(a.durationNano), bucket(a), a.traceId, a.spanId])
    )
    expect(unpackr.unpack(errors?.[2] ?? new Uint8Array())).toEqual([
      micros(a.startTimeUnixNano),
      a.traceId,
      a.spanId,
      "checkout",
      "/x",
      a.durationNano
    ])
    expect(plan.spanCount).toBe(5)
  })

  it("encodes non-ASCII and long key strings like lmdb, and grows its buffer for large spans", () => {
    const s = span({
      trace: 12,
      service: "käse-☃-服务-😀",
      correlationId: `order-${"ß".repeat(120)}-😀`,
      attributes: { "big.value": "x".repeat(20_000) }
    })
    const plan = planBatch(batch("agent", 1, [s, span({ trace: 13 })]))
    const [spanEntry, , correlationEntry, , , serviceEntry] = entries(plan)
    expect(Buffer.from(correlationEntry?.[1] ?? [])).toEqual(toBufferKey([...correlationKey(s)]))
    expect(Buffer.from(serviceEntry?.[1] ?? [])).toEqual(
      toBufferKey([s.service, serviceBucket(micros(s.startTimeUnixNano)), s.traceId, s.spanId])
    )
    expect(SpanRecord.decode(s.traceId, s.spanId, spanEntry?.[2] ?? new Uint8Array())).toEqual(s)
    expect(plan.table.length / 3).toBe(7)
  })
})
