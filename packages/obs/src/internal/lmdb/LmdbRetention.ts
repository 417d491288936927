/**
 * Retention: deletes whole time ranges, oldest first, in transactions of about `chunk` spans (or
 * entries) so the ingest writer interleaves with them instead of waiting for one long transaction.
 */

import type { Database } from "lmdb"
import type { RetentionResult } from "../../Store.js"
import {
  blockFields,
  digestMinute,
  epochOf,
  epochStart,
  indexEntries,
  indexedStatusClasses,
  maxDurationBand,
  maxKeyPart,
  type ServiceBlockSpan,
  type ServiceBlockValue,
  serviceBucket,
  spanBucket,
  spanKeyBucket
} from "./Keys.js"
import type { Layout } from "./LmdbLayout.js"

const chunk = 2_000

// biome-ignore lint/suspicious/noExplicitAny: lmdb keys are untyped arrays
type AnyKey = any

/** `stopped` is checked between chunks, so closing the store never races a pass still reading. */
export const deleteOlderThan = async (
  layout: Layout,
  cutoffUnixNano: bigint,
  stopped: () => boolean
): Promise<RetentionResult> => {
  const cutoffMicros = Number(cutoffUnixNano / 1000n)
  const cutoffSec = Math.floor(cutoffMicros / 1_000_000)
  let deletedSpans = 0
  let deletedLogs = 0
  let deletedMetrics = 0
  let deletedRollups = 0

  // Blocks whose whole bucket is older than the cutoff (the cutoff's own bucket waits for the next pass).
  const cutoffBucket = serviceBucket(cutoffMicros)
  for (const service of Array.from(layout.services.getKeys())) {
    for (;;) {
      if (stopped()) return { deletedSpans, deletedLogs, deletedMetrics, deletedRollups }
      const blocks: Array<{ key: AnyKey; value: ServiceBlockValue }> = []
      let spans = 0
      for (const entry of layout.byService.getRange({ start: [service, -1], end: [service, cutoffBucket] })) {
        blocks.push(entry)
        spans += entry.value.length / blockFields
        if (spans >= chunk) break
      }
      if (blocks.length === 0) break
      await layout.env.transaction(() => {
        for (const { key, value } of blocks) {
          for (let at = 0; at < value.length; at += blockFields) {
            const [startMicros, traceId, spanId, , , , , correlationId] = value.slice(
              at,
              at + blockFields
            ) as unknown as ServiceBlockSpan
            layout.spans.remove([spanKeyBucket(startMicros, traceId), traceId, spanId])
            if (correlationId !== "")
              layout.byCorrelation.remove([correlationId, startMicros, traceId, spanId])
          }
          layout.byService.remove(key)
        }
      })
      deletedSpans += spans
    }
    if (stopped()) return { deletedSpans, deletedLogs, deletedMetrics, deletedRollups }
    deletedRollups += await deleteRollups(layout, service, cutoffSec)
    await deleteRange(layout.redParts, { start: [service, -1], end: [service, cutoffSec] }, stopped)
  }
  await deleteDigests(layout, digestMinute(cutoffMicros), stopped)
  await deleteTraceIndex(layout, spanBucket(cutoffMicros), stopped)

  for (const cls of indexedStatusClasses)
    for (let band = 0; band <= maxDurationBand; band++)
      for (;;) {
        if (stopped()) return { deletedSpans, deletedLogs, deletedMetrics, deletedRollups }
        const keys = Array.from(
          layout.byStatus.getKeys({ start: [cls, band, -1], end: [cls, band, cutoffBucket], limit: chunk })
        )
        if (keys.length === 0) break
        await layout.env.transaction(() => {
          for (const key of keys) layout.byStatus.remove(key)
        })
      }

  for (;;) {
    if (stopped()) return { deletedSpans, deletedLogs, deletedMetrics, deletedRollups }
    const entries = Array.from(layout.logsByTime.getRange({ start: [-1], end: [cutoffMicros], limit: chunk }))
    if (entries.length === 0) break
    await layout.env.transaction(() => {
      for (const { key, value } of entries) {
        const [time, agentId, seq, index] = key as [number, string, number, number]
        layout.logs.remove([value, time, agentId, seq, index])
        layout.logsByTime.remove(key)
      }
    })
    deletedLogs += entries.length
  }

  for (;;) {
    if (stopped()) return { deletedSpans, deletedLogs, deletedMetrics, deletedRollups }
    const keys = Array.from(layout.metrics.getKeys({ start: [-1], end: [cutoffMicros], limit: chunk }))
    if (keys.length === 0) break
    await layout.env.transaction(() => {
      for (const key of keys) layout.metrics.remove(key)
    })
    deletedMetrics += keys.length
  }
  return { deletedSpans, deletedLogs, deletedMetrics, deletedRollups }
}

/** Deletes the keys of a range in transactions of `chunk`. */
const deleteRange = async (
  // biome-ignore lint/suspicious/noExplicitAny: any database
  db: Database<any, AnyKey>,
  range: { start: AnyKey; end: AnyKey },
  stopped: () => boolean
) => {
  for (;;) {
    if (stopped()) return
    const keys = Array.from(db.getKeys({ ...range, limit: chunk }))
    if (keys.length === 0) return
    await db.transaction(() => {
      for (const key of keys) db.remove(key)
    })
  }
}

/** Digest cells of minutes before the cutoff, peer by peer (the peer is the key's first part). */
const deleteDigests = async (layout: Layout, cutoffMinute: number, stopped: () => boolean) => {
  let seek: AnyKey = [""]
  for (;;) {
    const next = Array.from(layout.digests.getKeys({ start: seek, limit: 1 }))[0] as
      | [string, number]
      | undefined
    if (next === undefined || stopped()) return
    await deleteRange(layout.digests, { start: [next[0], -1], end: [next[0], cutoffMinute] }, stopped)
    seek = [next[0], maxKeyPart]
  }
}

/** Walks the service's routes by seeking past each one, deleting buckets that start before the cutoff. */
const deleteRollups = async (layout: Layout, service: string, cutoffSec: number): Promise<number> => {
  let deleted = 0
  let seek: AnyKey = [service]
  for (;;) {
    const next = Array.from(layout.red.getKeys({ start: seek, end: [service, maxKeyPart], limit: 1 }))[0] as
      | [string, string, number]
      | undefined
    if (next === undefined) return deleted
    const route = next[1]
    const keys = Array.from(
      layout.red.getKeys({ start: [service, route, -1], end: [service, route, cutoffSec] })
    )
    if (keys.length > 0) {
      await layout.env.transaction(() => {
        for (const key of keys) layout.red.remove(key)
      })
      deleted += keys.length
    }
    seek = [service, route, maxKeyPart]
  }
}

/**
 * Trace index groups all of whose entries name buckets before the cutoff, oldest epoch first, up to
 * the first epoch that keeps a group (epochs follow ingest, so later ones hold little that old: late
 * arrivals, which stay until their epoch's turn comes, their lookups finding no span).
 */
const deleteTraceIndex = async (layout: Layout, cutoffBucket: number, stopped: () => boolean) => {
  for (;;) {
    await deleteFilters(layout)
    const [first] = Array.from(layout.traceIndex.getKeys({ limit: 1 }))
    if (first === undefined || stopped()) return
    const epoch = epochOf(first)
    let kept = false
    let start: Uint8Array = epochStart(epoch)
    for (;;) {
      if (stopped()) return
      const groups = Array.from(
        layout.traceIndex.getRange({ start, end: epochStart(epoch + 1), limit: chunk }),
        ({ key, value }) => ({
          key,
          old: Array.from(indexEntries(value)).every(([, bucket]) => bucket < cutoffBucket)
        })
      )
      const old = groups.filter((group) => group.old)
      if (old.length < groups.length) kept = true
      if (old.length > 0)
        await layout.env.transaction(() => {
          for (const { key } of old) layout.traceIndex.remove(key)
        })
      const last = groups[groups.length - 1]
      if (groups.length < chunk || last === undefined) break
      // Past the last key read: the same bytes with a 0 appended.
      start = Buffer.concat([last.key, Buffer.alloc(1)])
    }
    if (kept) return
  }
}

/**
 * The filters of epochs before the oldest one the index still holds: read in the deleting
 * transaction, so that an epoch the writer seals meanwhile keeps its filter.
 */
const deleteFilters = (layout: Layout) =>
  layout.env.transaction(() => {
    const [first] = Array.from(layout.traceIndex.getKeys({ limit: 1 }))
    const end = first === undefined ? undefined : epochStart(epochOf(first))
    for (const key of Array.from(layout.traceFilters.getKeys(end === undefined ? {} : { end })))
      layout.traceFilters.remove(key)
  })
