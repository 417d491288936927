/**
 * The ingest write path: applies a round of planned agent batches (`WritePlan.ts`) inside one LMDB
 * write transaction (group commit). Runs synchronously inside lmdb's transaction callback, so reads
 * here see this transaction's writes.
 */
import { HashRing } from "@iii/core"
import type { Database } from "lmdb"
import { Packr, Unpackr } from "msgpackr"
import { readKey, toBufferKey } from "ordered-binary"
import type { WriteOutcome } from "../../Store.js"
import {
  blockFields,
  type DigestValue,
  digestMinute,
  epochBytes,
  epochEntries,
  epochOf,
  epochStart,
  indexEntries,
  logCorrelationKey,
  micros,
  plannedDbs,
  recordHash,
  type ServiceInfoValue,
  spanIdsOffset,
  statusBlockFields,
  traceGroup,
  traceIdBytes,
  traceIndexGroupKey,
  traceIndexRound
} from "./Keys.js"
import type { Layout } from "./LmdbLayout.js"
import { partValue, RedDeltas } from "./Red.js"
import * as TraceFilter from "./TraceFilter.js"
import type { BatchPlan } from "./WritePlan.js"

const { murmur3 } = HashRing

/** How stale a service's `lastSeen` may get before a write refreshes it (keeps writes rare). */
const lastSeenRefreshNano = 10_000_000_000n

export interface WriteState {
  /** The last ServiceInfoValue written per service, to skip redundant writes. */
  readonly services: Map<string, ServiceInfoValue>
  /** The trace index's current epoch (Keys.ts) and the entries written in it so far. */
  epoch: number
  epochEntries: number
  /** The rounds that stored trace index entries so far (they key its groups). */
  round: number
  /** The hashes of the trace ids of the current epoch's entries (TraceFilter.ts), `epochEntries` of them. */
  epochHashes: Uint32Array
}

/**
 * Each writer starts a new epoch of the trace index, after the newest stored (or filtered), so every
 * epoch before it is sealed: any of those without a filter that decodes (its writer stopped before
 * sealing it, a sealing commit failed, the bytes are damaged) gets one built from its index entries.
 * Lookups read an epoch without a filter whole, so none misses a trace meanwhile.
 */
export const makeWriteState = (layout: Layout): WriteState => {
  const services = new Map<string, ServiceInfoValue>()
  for (const { key, value } of layout.services.getRange()) services.set(key, value)
  let epoch = 1
  for (const key of layout.traceIndex.getKeys({ reverse: true, limit: 1 })) epoch = epochOf(key) + 1
  for (const key of layout.traceFilters.getKeys({ reverse: true, limit: 1 }))
    epoch = Math.max(epoch, epochOf(key) + 1)
  sealUnfiltered(layout)
  return { services, epoch, epochEntries: 0, round: 0, epochHashes: new Uint32Array(epochEntries + 8_000) }
}

/** Compacts and stores the filter of every epoch of the index that has no filter that decodes. */
const sealUnfiltered = (layout: Layout): void => {
  const missing: Array<number> = []
  for (let seek: Uint8Array = epochStart(0); ; ) {
    const [first] = Array.from(layout.traceIndex.getKeys({ start: seek, limit: 1 }))
    if (first === undefined) break
    const epoch = epochOf(first)
    seek = epochStart(epoch + 1)
    const stored = layout.traceFilters.getBinary(epochStart(epoch))
    if (stored === undefined || TraceFilter.decode(stored) === undefined) missing.push(epoch)
  }
  if (missing.length > 0)
    layout.env.transactionSync(() => {
      for (const epoch of missing) {
        const hashes: Array<number> = []
        for (const group of compactEpoch(layout, epoch))
          for (const [id] of indexEntries(group)) hashes.push(TraceFilter.idHash(id))
        layout.traceFilters.put(epochStart(epoch), TraceFilter.build(hashes))
      }
    })
}

/**
 * Rewrites an epoch being sealed as one value per group, in the open write transaction, and returns
 * those values. A group takes a value in every round that indexed one of its ids, so an epoch
 * written in small rounds (a quiet node: each round is what arrived since the last commit) held
 * dozens per group, and every lookup its filter let through stepped a cursor over each and copied
 * it. The value goes under a round the epoch has not used: a key, once written, never changes, so
 * retention, which judges groups before its deleting transaction, never deletes entries it did not
 * judge (it may delete a key compacted meanwhile: then nothing).
 */
const compactEpoch = (layout: Layout, epoch: number): Array<Uint8Array> => {
  // Per group, its values (one per round).
  const byGroup: Array<Array<{ key: Uint8Array; value: Uint8Array }> | undefined> = []
  let next = 0
  for (const entry of layout.traceIndex.getRange({ start: epochStart(epoch), end: epochStart(epoch + 1) })) {
    const group = entry.key[epochBytes] as number
    const list = byGroup[group]
    if (list === undefined) byGroup[group] = [entry]
    else list.push(entry)
    next = Math.max(next, traceIndexRound(entry.key) + 1)
  }
  return byGroup.flatMap((group, at) => {
    if (group === undefined) return []
    if (group.length === 1) return [group[0]?.value as Uint8Array]
    const value = Buffer.concat(group.map((e) => e.value))
    for (const { key } of group) layout.traceIndex.remove(key)
    layout.traceIndex.put(traceIndexGroupKey(epoch, at, next), value)
    return [value]
  })
}

/**
 * Applies a round in one transaction and resolves once it is durable. When the commit fails (a
 * full disk, an I/O error), nothing of the round is stored: the service cache, which the round may
 * have advanced, is read back from the store, and the error thrown is the cause, which lmdb hides
 * in `commitError` (left unhandled, that promise would end the thread).
 */
export const commitRound = async (
  layout: Layout,
  state: WriteState,
  round: ReadonlyArray<BatchPlan>
): Promise<ReadonlyArray<WriteOutcome>> => {
  const committed = layout.env.transaction(() => applyRound(layout, state, round))
  // The round's flush (a thenable) fails with its commit; awaited only after a commit that
  // succeeded, it needs a handler of its own (an unhandled rejection ends the writer thread for good).
  const flushed = Promise.resolve(layout.env.flushed)
  flushed.catch(() => undefined)
  try {
    const outcomes = await committed
    await flushed
    return outcomes
  } catch (error) {
    state.services.clear()
    for (const { key, value } of layout.services.getRange()) state.services.set(key, value)
    const hidden = (error as { commitError?: Promise<unknown> } | undefined)?.commitError
    throw hidden === undefined
      ? error
      : await hidden.then(
          () => error,
          (cause: unknown) => cause
        )
  }
}

/**
 * Puts unless the key is stored; true when it put. lmdb returns that flag from `putSync` with
 * `noOverwrite`, though its types say void.
 */
// biome-ignore lint/suspicious/noExplicitAny: any database, any key
const putNew = <V>(db: Database<V, any>, key: unknown, value: V): boolean =>
  db.putSync(key, value, { noOverwrite: true }) as unknown as boolean
const SPANS = plannedDbs.indexOf("spans")
const TRACE_INDEX = plannedDbs.indexOf("traceIndex")
const BY_SERVICE = plannedDbs.indexOf("byService")
const BY_STATUS = plannedDbs.indexOf("byStatus")

/**
 * Applies a round in the open write transaction. Every record is stored once, whoever sends it how
 * often: a span already stored (a re-sent batch, a late hint, a repair) is left out of the round's
 * index blocks, a RED part already applied is not counted again, logs and metric points are keyed by
 * (agent, seq, index). A plan none of whose records was new is a `duplicate`.
 */
export const applyRound = (
  layout: Layout,
  state: WriteState,
  round: ReadonlyArray<BatchPlan>
): ReadonlyArray<WriteOutcome> => {
  const red = new RedDeltas()
  const digests = new DigestDeltas()
  // The round's trace index entries by group (Keys.ts, traceGroup).
  const groups: Array<Array<Uint8Array> | undefined> = []
  const outcomes = round.map((plan) => {
    const peers = plan.peers
    const { table, bytes } = plan
    let stored = 0
    let span = 0
    let repeated: Set<string> | undefined
    // Whether a span since the last trace index entry was new: the entry is stored only then.
    let fresh = false
    let offset = 0
    for (let t = 0; t < table.length; t += 3) {
      const db = table[t] ?? 0
      const valueStart = offset + (table[t + 1] ?? 0)
      const valueEnd = valueStart + (table[t + 2] ?? 0)
      const key = bytes.subarray(offset, valueStart)
      const value = bytes.subarray(valueStart, valueEnd)
      offset = valueEnd
      if (db === SPANS) {
        if (putNew(layout.planned[SPANS] as Database<Uint8Array, Uint8Array>, key, value)) {
          stored++
          fresh = true
          if (peers !== undefined)
            digests.add(
              peers.sets[peers.spans[span] ?? 0],
              plan.spanMinutes?.[span] ?? 0,
              murmur3(key.subarray(spanIdsOffset))
            )
        } else {
          repeated ??= new Set()
          repeated.add(Buffer.from(key.subarray(spanIdsOffset)).toString("latin1"))
        }
        span++
      } else if (db === TRACE_INDEX) {
        if (fresh) {
          const entry = key.subarray(epochBytes)
          const hash = TraceFilter.idHash(entry.subarray(0, traceIdBytes))
          const group = groups[traceGroup(hash)]
          if (group === undefined) groups[traceGroup(hash)] = [entry]
          else group.push(entry)
          noteIndexed(state, hash)
        }
        fresh = false
      } else if (repeated !== undefined && (db === BY_SERVICE || db === BY_STATUS)) {
        const kept = withoutSpans(key, value, db === BY_SERVICE ? blockFields : statusBlockFields, repeated)
        if (kept !== undefined) layout.planned[db]?.put(kept.key, kept.value)
      } else layout.planned[db]?.put(key, value)
    }
    plan.red.forEach((part, i) => {
      if (!putNew(layout.redParts, [part.service, part.bucket, plan.agentId, plan.seq], partValue(part)))
        return
      stored++
      red.addPart(part)
      if (peers !== undefined)
        digests.add(
          peers.sets[peers.red[i] ?? 0],
          Math.floor(part.bucket / 60),
          recordHash(["red", part.service, part.bucket, plan.agentId, plan.seq])
        )
    })
    for (const [service, seen] of plan.services) noteService(layout, state, service, seen)
    plan.logs.forEach((log, i) => {
      const index = plan.logIndexes?.[i] ?? i
      const time = micros(log.timeUnixNano)
      const ck = logCorrelationKey(log)
      if (!putNew(layout.logs, [ck, time, plan.agentId, plan.seq, index], log)) return
      stored++
      layout.logsByTime.put([time, plan.agentId, plan.seq, index], ck)
      if (peers !== undefined)
        digests.add(
          peers.sets[peers.logs[i] ?? 0],
          digestMinute(time),
          recordHash(["log", ck, time, plan.agentId, plan.seq, index])
        )
    })
    plan.metrics.forEach((point, i) => {
      const index = plan.metricIndexes?.[i] ?? i
      const time = micros(point.timeUnixNano)
      if (!putNew(layout.metrics, [time, plan.agentId, plan.seq, index], point)) return
      stored++
      if (peers !== undefined)
        digests.add(
          peers.sets[peers.metrics[i] ?? 0],
          digestMinute(time),
          recordHash(["metric", time, plan.agentId, plan.seq, index])
        )
    })
    const records = plan.spanCount + plan.red.length + plan.logCount + plan.metricCount
    return stored > 0 || records === 0 ? "stored" : "duplicate"
  })
  red.flush(layout.red)
  digests.flush(layout.digests)
  if (groups.length > 0) {
    groups.forEach((group, at) => {
      if (group !== undefined)
        layout.traceIndex.put(traceIndexGroupKey(state.epoch, at, state.round), Buffer.concat(group))
    })
    state.round++
  }
  if (state.epochEntries >= epochEntries) {
    // Sealed: from now on lookups read the epoch only when its filter may hold their id, one value
    // per group.
    compactEpoch(layout, state.epoch)
    layout.traceFilters.put(epochStart(state.epoch), TraceFilter.build(state.epochHashes, state.epochEntries))
    state.epoch++
    state.epochEntries = 0
  }
  return outcomes
}

const noteIndexed = (state: WriteState, hash: number): void => {
  if (state.epochEntries === state.epochHashes.length) {
    const bigger = new Uint32Array(state.epochHashes.length * 2)
    bigger.set(state.epochHashes)
    state.epochHashes = bigger
  }
  state.epochHashes[state.epochEntries++] = hash
}

const unpackr = new Unpackr({ useRecords: false })
const packr = new Packr({ useRecords: false })

/**
 * An index block without the spans already stored (`repeated` holds their `spans` keys as latin1
 * strings), keyed by its first remaining span; undefined when none remains. Only re-sent or repaired
 * data takes this path.
 */
const withoutSpans = (
  key: Uint8Array,
  value: Uint8Array,
  fields: number,
  repeated: ReadonlySet<string>
): { key: Uint8Array; value: Uint8Array } | undefined => {
  const block = unpackr.unpack(value) as Array<string | number>
  const kept: Array<string | number> = []
  for (let at = 0; at < block.length; at += fields)
    if (!repeated.has(`${block[at + 1]}\u0000${block[at + 2]}`)) kept.push(...block.slice(at, at + fields))
  if (kept.length === 0) return undefined
  const parts = readKey(key, 0, key.length) as Array<string | number>
  parts.splice(parts.length - 2, 2, kept[1] as string, kept[2] as string)
  return { key: toBufferKey(parts), value: packr.pack(kept) }
}

interface DigestDelta {
  readonly peer: string
  readonly minute: number
  count: number
  xor: number
  sum: number
}

/** Digest changes of a round, per (peer, minute), merged into the stored cells at the end. */
class DigestDeltas {
  private readonly cells = new Map<string, DigestDelta>()
  // Consecutive records mostly share their owners and minute: their cells are looked up once.
  private lastPeers: ReadonlyArray<string> | undefined
  private lastMinute = Number.NaN
  private last: Array<DigestDelta> = []

  add(peers: ReadonlyArray<string> | undefined, minute: number, hash: number): void {
    if (peers === undefined) return
    if (peers !== this.lastPeers || minute !== this.lastMinute) {
      this.lastPeers = peers
      this.lastMinute = minute
      this.last = peers.map((peer) => {
        const id = `${peer}\u0000${minute}`
        let cell = this.cells.get(id)
        if (cell === undefined) {
          cell = { peer, minute, count: 0, xor: 0, sum: 0 }
          this.cells.set(id, cell)
        }
        return cell
      })
    }
    for (const cell of this.last) {
      cell.count++
      cell.xor = (cell.xor ^ hash) >>> 0
      cell.sum = (cell.sum + hash) >>> 0
    }
  }

  // biome-ignore lint/suspicious/noExplicitAny: lmdb keys are untyped arrays
  flush(db: Database<DigestValue, any>): void {
    for (const { peer, minute, count, xor, sum } of this.cells.values()) {
      const [c, x, s] = db.get([peer, minute]) ?? [0, 0, 0]
      db.put([peer, minute], [c + count, (x ^ xor) >>> 0, (s + sum) >>> 0])
    }
  }
}

/** Records a batch's sighting of a service; writes only when labels changed or lastSeen went stale. */
const noteService = (layout: Layout, state: WriteState, service: string, seen: ServiceInfoValue) => {
  const known = state.services.get(service)
  if (
    known === undefined ||
    seen.lastSeenUnixNano - known.lastSeenUnixNano > lastSeenRefreshNano ||
    (seen.component !== undefined && known.component !== seen.component) ||
    (seen.composition !== undefined && known.composition !== seen.composition) ||
    (seen.namespace !== undefined && known.namespace !== seen.namespace)
  ) {
    const info: ServiceInfoValue = {
      ...known,
      ...seen,
      lastSeenUnixNano:
        known !== undefined && known.lastSeenUnixNano > seen.lastSeenUnixNano
          ? known.lastSeenUnixNano
          : seen.lastSeenUnixNano
    }
    state.services.set(service, info)
    layout.services.put(service, info)
  }
}
