/**
 * Merging what several nodes answered into one answer: replicas' copies removed, sketches merged
 * exactly, search pages cut where every node's answer is complete. Pure functions.
 */
import type { Telemetry } from "@iii/core"
import { byStart, type RedCell, type ServiceInfo, type TracePage, type TraceSummary } from "../../Store.js"
import { decodeCursor, encodeCursor, newestFirst, type Position } from "../Cursor.js"

/** A trace's spans from its owners: each span once, by start then span id. */
export const spans = (lists: ReadonlyArray<ReadonlyArray<Telemetry.Span>>): ReadonlyArray<Telemetry.Span> => {
  const byId = new Map<string, Telemetry.Span>()
  for (const list of lists) for (const s of list) byId.set(s.spanId, s)
  return Array.from(byId.values()).sort(byStart)
}

const positionOf = (t: TraceSummary): Position => ({
  startMicros: Number(t.matched.startTimeUnixNano / 1000n),
  traceId: t.traceId,
  spanId: t.matched.spanId
})

/**
 * One page from every node's page of the same query. A node's page is complete down to its
 * `nextCursor`; the merged page is complete down to the newest of those, so it keeps what is newer,
 * each trace once (the copy with the most spans), newest first.
 */
export const pages = (answers: ReadonlyArray<TracePage>, limit: number): TracePage => {
  const floors = answers
    .flatMap((p) => (p.nextCursor === undefined ? [] : [decodeCursor(p.nextCursor)]))
    .flatMap((c) => (c._tag === "Some" ? [c.value] : []))
    .sort(newestFirst)
  const boundary = floors[0]
  const best = new Map<string, TraceSummary>()
  for (const page of answers)
    for (const t of page.traces) {
      const known = best.get(t.traceId)
      if (
        known === undefined ||
        t.spanCount > known.spanCount ||
        (t.spanCount === known.spanCount && newestFirst(positionOf(t), positionOf(known)) < 0)
      )
        best.set(t.traceId, t)
    }
  const candidates = Array.from(best.values())
    .filter((t) => boundary === undefined || newestFirst(positionOf(t), boundary) <= 0)
    .sort((a, b) => newestFirst(positionOf(a), positionOf(b)))
  const traces = candidates.slice(0, limit)
  const last = traces[traces.length - 1]
  const next = candidates.length > limit && last !== undefined ? positionOf(last) : boundary
  return next === undefined ? { traces } : { traces, nextCursor: encodeCursor(next) }
}

/** Services from every node: each once, with the newest sighting and the labels it carried. */
export const services = (lists: ReadonlyArray<ReadonlyArray<ServiceInfo>>): ReadonlyArray<ServiceInfo> => {
  const byName = new Map<string, ServiceInfo>()
  for (const list of lists)
    for (const s of list) {
      const known = byName.get(s.service)
      if (known === undefined || s.lastSeenUnixNano > known.lastSeenUnixNano)
        byName.set(s.service, { ...known, ...s })
      else byName.set(s.service, { ...s, ...known })
    }
  return Array.from(byName.values()).sort((a, b) =>
    a.service < b.service ? -1 : a.service > b.service ? 1 : 0
  )
}

/**
 * RED cells from a service's owners: replicas hold the same cell, so each (bucket, route) keeps the
 * copy that counted the most requests (one that missed a part has fewer), by bucket.
 */
export const redCells = (lists: ReadonlyArray<ReadonlyArray<RedCell>>): ReadonlyArray<RedCell> => {
  const cells = new Map<string, RedCell>()
  for (const list of lists)
    for (const c of list) {
      const id = `${c.bucketStartSec}\u0000${c.route}`
      const known = cells.get(id)
      if (known === undefined || c.count > known.count) cells.set(id, c)
    }
  return Array.from(cells.values()).sort((a, b) => a.bucketStartSec - b.bucketStartSec)
}

/** Trace ids from every node, each once, in the order the nodes gave them, at most `limit`. */
export const ids = (lists: ReadonlyArray<ReadonlyArray<string>>, limit: number): ReadonlyArray<string> => {
  const out = new Set<string>()
  const longest = Math.max(0, ...lists.map((l) => l.length))
  for (let i = 0; i < longest && out.size < limit; i++)
    for (const list of lists) {
      const id = list[i]
      if (id !== undefined && out.size < limit) out.add(id)
    }
  return Array.from(out)
}

const logId = (log: Telemetry.LogRecord) =>
  JSON.stringify(log, (_k, v) => (typeof v === "bigint" ? v.toString() : v))

/** Logs from a correlation key's owners: each once, oldest first, at most `limit`. */
export const logs = (
  lists: ReadonlyArray<ReadonlyArray<Telemetry.LogRecord>>,
  limit: number
): ReadonlyArray<Telemetry.LogRecord> => {
  const byId = new Map<string, Telemetry.LogRecord>()
  for (const list of lists) for (const log of list) byId.set(logId(log), log)
  return Array.from(byId.values())
    .sort((a, b) => (a.timeUnixNano < b.timeUnixNano ? -1 : a.timeUnixNano > b.timeUnixNano ? 1 : 0))
    .slice(0, limit)
}
