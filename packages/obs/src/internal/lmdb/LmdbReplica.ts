/**
 * What the cluster asks of a node's LMDB store besides reads and writes (`Store.ReplicaService`):
 * durable hints, the anti-entropy digests and the records of a minute, records exported as bytes and
 * imported as shares to plan again, and settings kept with the data. Runs on the main thread; its
 * writes are small transactions of their own that interleave with the writer thread's.
 */
import { Packr, Unpackr } from "msgpackr"
import {
  type DigestCell,
  type Hint,
  type IngestBatch,
  type RecordEntry,
  type RedPart,
  recordSlices
} from "../../Store.js"
import {
  blockFields,
  type DigestKey,
  digestMinute,
  maxKeyPart,
  type RecordKey,
  type RedPartValue,
  recordHash,
  serviceBucketMicros,
  spanKeyBucket
} from "./Keys.js"
import type { Layout } from "./LmdbLayout.js"
import { partOf } from "./Red.js"
import * as SpanRecord from "./SpanRecord.js"

// biome-ignore lint/suspicious/noExplicitAny: lmdb keys are untyped arrays
type AnyKey = any

const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, int64AsType: "bigint" })

const minuteMicros = 60_000_000
const bucketsPerMinute = minuteMicros / serviceBucketMicros

/** Hint ids: milliseconds since the epoch times 1024, plus a counter, so they sort by age. */
let hintCounter = 0
const hintId = () => Date.now() * 1024 + (hintCounter++ % 1024)

const durably = async (layout: Layout, f: () => void) => {
  await layout.env.transaction(f)
  await layout.env.flushed
}

export const putHint = (layout: Layout, target: string, bytes: Uint8Array) =>
  durably(layout, () => {
    layout.hints.put([target, hintId()], bytes)
  })

export const hints = (layout: Layout, target: string, limit: number): ReadonlyArray<Hint> =>
  Array.from(layout.hints.getRange({ start: [target, -1], end: [target, maxKeyPart], limit }), (e) => ({
    id: (e.key as [string, number])[1],
    bytes: e.value
  }))

export const deleteHints = (layout: Layout, target: string, ids: ReadonlyArray<number>) =>
  durably(layout, () => {
    for (const id of ids) layout.hints.remove([target, id])
  })

export const hintStats = (layout: Layout) => {
  const stats = new Map<string, { count: number; bytes: number; oldestMs: number }>()
  const now = Date.now()
  for (const { key, value } of layout.hints.getRange()) {
    const [target, id] = key as [string, number]
    const s = stats.get(target) ?? { count: 0, bytes: 0, oldestMs: now - Math.floor(id / 1024) }
    s.count++
    s.bytes += value.length
    stats.set(target, s)
  }
  return stats
}

export const digests = (layout: Layout, peer: string): ReadonlyArray<DigestCell> =>
  Array.from(layout.digests.getRange({ start: [peer, -1], end: [peer, maxKeyPart] }), (e) => {
    const [count, xor, sum] = e.value
    return { minute: (e.key as DigestKey)[1], count, xor, sum }
  })

export const setDigests = (layout: Layout, peer: string, cells: ReadonlyArray<DigestCell>) =>
  layout.env.transaction(() => {
    for (const c of cells)
      if (c.count === 0) layout.digests.remove([peer, c.minute])
      else layout.digests.put([peer, c.minute], [c.count, c.xor, c.sum])
  })

/**
 * The distinct minutes of one index's keys, found by seeking past each minute (one seek per minute
 * present, not a scan). `minuteOf` reads the minute from a key; `startOf` makes the first key of one.
 */
const minutesBySeeking = (
  keys: (start: AnyKey) => AnyKey | undefined,
  minuteOf: (key: AnyKey) => number,
  startOf: (minute: number) => AnyKey,
  into: Set<number>
) => {
  let start = startOf(Number.MIN_SAFE_INTEGER)
  for (;;) {
    const key = keys(start)
    if (key === undefined) return
    const minute = minuteOf(key)
    into.add(minute)
    start = startOf(minute + 1)
  }
}

const first = (iterable: Iterable<AnyKey>) => {
  for (const k of iterable) return k
  return undefined
}

export const minutes = (layout: Layout): ReadonlyArray<number> => {
  const found = new Set<number>()
  const services = Array.from(layout.services.getKeys())
  for (const service of services) {
    minutesBySeeking(
      (start) => first(layout.byService.getKeys({ start, end: [service, maxKeyPart], limit: 1 })),
      (key) => Math.floor(key[1] / bucketsPerMinute),
      (m) => [service, m === Number.MIN_SAFE_INTEGER ? -1 : m * bucketsPerMinute],
      found
    )
    minutesBySeeking(
      (start) => first(layout.redParts.getKeys({ start, end: [service, maxKeyPart], limit: 1 })),
      (key) => Math.floor(key[1] / 60),
      (m) => [service, m === Number.MIN_SAFE_INTEGER ? -1 : m * 60],
      found
    )
  }
  for (const db of [layout.logsByTime, layout.metrics] as const)
    minutesBySeeking(
      (start) => first(db.getKeys({ start, limit: 1 })),
      (key) => digestMinute(key[0]),
      (m) => [m === Number.MIN_SAFE_INTEGER ? -1 : m * minuteMicros],
      found
    )
  return Array.from(found).sort((a, b) => a - b)
}

const entry = (key: RecordKey, routing: string): RecordEntry => ({
  id: JSON.stringify(key),
  routing,
  hash: recordHash(key)
})

export const records = (layout: Layout, minute: number, slice: number): ReadonlyArray<RecordEntry> => {
  const out: Array<RecordEntry> = []
  const seconds = 60 / recordSlices
  const fromSec = minute * 60 + slice * seconds
  const from = fromSec * 1_000_000
  const to = from + seconds * 1_000_000
  for (const service of Array.from(layout.services.getKeys())) {
    for (const { value } of layout.byService.getRange({
      start: [service, from / serviceBucketMicros],
      end: [service, to / serviceBucketMicros]
    }))
      for (let at = 0; at < value.length; at += blockFields) {
        const traceId = value[at + 1] as string
        out.push(
          entry(
            ["span", traceId, value[at + 2] as string, spanKeyBucket(value[at] as number, traceId)],
            traceId
          )
        )
      }
    for (const key of layout.redParts.getKeys({
      start: [service, fromSec],
      end: [service, fromSec + seconds]
    })) {
      const [, bucket, agentId, seq] = key as [string, number, string, number]
      out.push(entry(["red", service, bucket, agentId, seq], service))
    }
  }
  for (const { key, value } of layout.logsByTime.getRange({ start: [from], end: [to] })) {
    const [time, agentId, seq, index] = key as [number, string, number, number]
    out.push(entry(["log", value, time, agentId, seq, index], value))
  }
  for (const key of layout.metrics.getKeys({ start: [from], end: [to] })) {
    const [time, agentId, seq, index] = key as [number, string, number, number]
    out.push(entry(["metric", time, agentId, seq, index], agentId))
  }
  return out
}

type Exported = {
  spans: Array<[string, string, Uint8Array]>
  logs: Array<[string, number, number, unknown]>
  metrics: Array<[string, number, number, unknown]>
  red: Array<[string, number, string, number, RedPartValue]>
}

export const exportRecords = (layout: Layout, ids: ReadonlyArray<string>): Uint8Array => {
  const out: Exported = { spans: [], logs: [], metrics: [], red: [] }
  for (const id of ids) {
    const key = JSON.parse(id) as RecordKey
    switch (key[0]) {
      case "span": {
        const bytes = layout.spans.get([key[3], key[1], key[2]])
        if (bytes !== undefined) out.spans.push([key[1], key[2], bytes])
        break
      }
      case "log": {
        const log = layout.logs.get(key.slice(1))
        if (log !== undefined) out.logs.push([key[3], key[4], key[5], log])
        break
      }
      case "metric": {
        const point = layout.metrics.get(key.slice(1))
        if (point !== undefined) out.metrics.push([key[2], key[3], key[4], point])
        break
      }
      case "red": {
        const part = layout.redParts.get(key.slice(1))
        if (part !== undefined) out.red.push([key[1], key[2], key[3], key[4], part])
        break
      }
    }
  }
  return packr.pack(out)
}

/** Shares to plan: the spans in one (their RED is in the parts), logs, points and parts by (agent, seq). */
export const importRecords = (bytes: Uint8Array): ReadonlyArray<IngestBatch> => {
  const got = unpackr.unpack(bytes) as Exported
  const shares = new Map<
    string,
    {
      agentId: string
      seq: number
      logs: Array<[number, unknown]>
      metrics: Array<[number, unknown]>
      red: Array<RedPart>
    }
  >()
  const share = (agentId: string, seq: number) => {
    const id = `${agentId}\u0000${seq}`
    let s = shares.get(id)
    if (s === undefined) {
      s = { agentId, seq, logs: [], metrics: [], red: [] }
      shares.set(id, s)
    }
    return s
  }
  for (const [agentId, seq, index, log] of got.logs) share(agentId, seq).logs.push([index, log])
  for (const [agentId, seq, index, point] of got.metrics) share(agentId, seq).metrics.push([index, point])
  for (const [service, bucket, agentId, seq, value] of got.red)
    share(agentId, seq).red.push(partOf(service, bucket, value))
  const out: Array<IngestBatch> = Array.from(shares.values(), (s) => ({
    agentId: s.agentId,
    seq: s.seq,
    spans: [],
    logs: s.logs.map(([, log]) => log) as IngestBatch["logs"],
    logIndexes: s.logs.map(([index]) => index),
    metrics: s.metrics.map(([, point]) => point) as IngestBatch["metrics"],
    metricIndexes: s.metrics.map(([index]) => index),
    red: s.red
  }))
  if (got.spans.length > 0)
    out.push({
      agentId: "repair",
      seq: 1,
      spans: got.spans.map(([traceId, spanId, record]) => SpanRecord.decode(traceId, spanId, record)),
      logs: [],
      metrics: [],
      red: []
    })
  return out
}
