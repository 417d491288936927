/**
 * A write plan as bytes, so a cluster node can hand the plan it made to the other owners (and keep it
 * as a hint) and they store exactly its bytes without decoding or encoding a span again. MessagePack,
 * one positional array; typed arrays travel as their bytes and come back in buffers of their own (a
 * plan's buffers are later transferred to the writer thread, which a shared buffer cannot be).
 */
import { Packr, Unpackr } from "msgpackr"
import type { RecordOwners, RedPart } from "../../Store.js"
import type { BatchPlan } from "./WritePlan.js"

// Timestamps are bigints and must come back as bigints; numbers beyond 32 bits travel as doubles.
const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, int64AsType: "bigint" })

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)

/** A copy of `bytes` in a buffer of its own, viewed as `Type`. */
const copyAs = <T>(bytes: Uint8Array, Type: new (buffer: ArrayBuffer) => T): T => {
  const buffer = new ArrayBuffer(bytes.byteLength)
  new Uint8Array(buffer).set(bytes)
  return new Type(buffer)
}

const optional = <A, B>(value: A | undefined, f: (a: A) => B): B | null =>
  value === undefined ? null : f(value)

export const encodePlan = (plan: BatchPlan): Uint8Array =>
  packr.pack([
    plan.agentId,
    plan.seq,
    plan.spanCount,
    bytesOf(plan.table),
    bytesOf(plan.bytes),
    plan.red.map((p) => [p.service, p.bucket, p.routes, bytesOf(p.samples)]),
    plan.services,
    plan.logs,
    plan.logIndexes ?? null,
    plan.metrics,
    plan.metricIndexes ?? null,
    optional(plan.peers, (o) => [
      o.sets,
      bytesOf(o.spans),
      bytesOf(o.logs),
      bytesOf(o.metrics),
      bytesOf(o.red)
    ]),
    optional(plan.spanMinutes, bytesOf)
  ])

type Encoded = [
  string,
  number,
  number,
  Uint8Array,
  Uint8Array,
  Array<[string, number, Array<string>, Uint8Array]>,
  BatchPlan["services"],
  BatchPlan["logs"],
  Array<number> | null,
  BatchPlan["metrics"],
  Array<number> | null,
  [Array<Array<string>>, Uint8Array, Uint8Array, Uint8Array, Uint8Array] | null,
  Uint8Array | null
]

export const decodePlan = (bytes: Uint8Array): BatchPlan => {
  const [
    agentId,
    seq,
    spanCount,
    table,
    planBytes,
    red,
    services,
    logs,
    logIndexes,
    metrics,
    metricIndexes,
    peers,
    minutes
  ] = unpackr.unpack(bytes) as Encoded
  const owners = (o: NonNullable<Encoded[11]>): RecordOwners => ({
    sets: o[0],
    spans: copyAs(o[1], Uint16Array),
    logs: copyAs(o[2], Uint16Array),
    metrics: copyAs(o[3], Uint16Array),
    red: copyAs(o[4], Uint16Array)
  })
  return {
    agentId,
    seq,
    spanCount,
    logCount: logs.length,
    metricCount: metrics.length,
    table: copyAs(table, Uint32Array),
    bytes: copyAs(planBytes, Uint8Array),
    red: red.map(
      ([service, bucket, routes, samples]): RedPart => ({
        service,
        bucket,
        routes,
        samples: copyAs(samples, Float64Array)
      })
    ),
    services,
    logs,
    logIndexes: logIndexes ?? undefined,
    metrics,
    metricIndexes: metricIndexes ?? undefined,
    peers: peers === null ? undefined : owners(peers),
    spanMinutes: minutes === null ? undefined : copyAs(minutes, Uint32Array)
  }
}
