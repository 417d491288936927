/**
 * A cluster node's background work, one step at a time (`tick`):
 *
 * - **Hinted handoff**: hints kept for a peer are sent when it answers again.
 * - **Moving data on a ring change** (a node joined or leaves): every record is looked up under the
 *   new placement; for each owner it gained, the first of its old owners that is up sends it (so
 *   only what the new owners now own moves, once), and this node recounts its digest cells under the
 *   new placement. Then it has settled; once every member has, reads stop asking the old owners, a
 *   joining node is up and a leaving one has left.
 * - **Anti-entropy**: with each peer, the digest cells per minute of what both should store are
 *   compared; for a minute that differs, the two lists of records are compared and what this node
 *   misses is copied from the peer (the peer does the same with this node), then the cell is
 *   recounted. Only differing minutes are listed, never the whole store.
 */
import { Effect } from "effect"
import { type DigestCell, type RecordEntry, recordSlices } from "../../Store.js"
import type { ClusterNode } from "./ClusterNode.js"

const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(effect)

/** Lets sockets and timers (heartbeats, ingest) run between steps of background work. */
const yieldToIo = () => new Promise<void>((resolve) => setImmediate(resolve))

/** Records sent per call when moving data or repairing. */
const chunk = 2_000

const cellOf = (minute: number, hashes: Iterable<number>): DigestCell => {
  let count = 0
  let xor = 0
  let sum = 0
  for (const h of hashes) {
    count++
    xor = (xor ^ h) >>> 0
    sum = (sum + h) >>> 0
  }
  return { minute, count, xor, sum }
}

const sameCell = (a: DigestCell | undefined, b: DigestCell | undefined) =>
  (a?.count ?? 0) === (b?.count ?? 0) && (a?.xor ?? 0) === (b?.xor ?? 0) && (a?.sum ?? 0) === (b?.sum ?? 0)

/** Sends records to a peer in chunks; returns how many it stored and the bytes sent. */
const send = async (node: ClusterNode, peer: string, ids: ReadonlyArray<string>) => {
  const link = node.links.get(peer)
  if (link === undefined) throw new Error(`${peer} is not a member`)
  let bytes = 0
  for (let i = 0; i < ids.length; i += chunk) {
    const exported = await run(node.local.replica.exportRecords(ids.slice(i, i + chunk)))
    bytes += exported.length
    await link.call("import", exported, node.settings.heartbeatTimeout * 12)
  }
  return bytes
}

/**
 * Moves data for the current placement (see the module doc). Returns false when the placement
 * changed meanwhile or a peer could not take its records: the next tick starts again.
 */
export const rebalance = async (node: ClusterNode): Promise<boolean> => {
  const m = node.membership
  const target = m.current
  const from = m.settled
  const self = node.self
  const peers = target.members.filter((p) => p !== self)
  for (const minute of await run(node.local.replica.minutes())) {
    const hashes = new Map<string, Array<number>>(peers.map((p) => [p, []]))
    const moves = new Map<string, Array<string>>()
    const slices: Array<ReadonlyArray<RecordEntry>> = []
    for (let slice = 0; slice < recordSlices; slice++) {
      await yieldToIo()
      slices.push(await run(node.local.replica.records(minute, slice)))
    }
    if (m.current.id !== target.id) return false
    for (const r of slices.flat()) {
      const owners = target.ownersOf(r.routing)
      if (owners.includes(self)) for (const o of owners) if (o !== self) hashes.get(o)?.push(r.hash)
      if (from === undefined) continue
      // One old owner that is up sends it, chosen by the record's hash so the senders share the work.
      const old = from.ownersOf(r.routing)
      const senders = old.filter((o) => m.isUp(o))
      if (senders[r.hash % senders.length] !== self) continue
      for (const o of owners)
        if (o !== self && !old.includes(o)) {
          const ids = moves.get(o) ?? []
          ids.push(r.id)
          moves.set(o, ids)
        }
    }
    for (const [peer, ids] of moves) {
      const bytes = await send(node, peer, ids).catch(() => undefined)
      if (bytes === undefined) return false
      node.counters.movedRecords += ids.length
      node.counters.movedBytes += bytes
    }
    for (const [peer, list] of hashes) await run(node.local.replica.setDigests(peer, [cellOf(minute, list)]))
  }
  if (m.current.id !== target.id) return false
  node.counters.movesCompleted++
  return true
}

/** How long after a minute ends before anti-entropy compares it (writes to it may still arrive). */
export const settleDelay = (node: ClusterNode) => Math.min(60_000, 2 * node.settings.repairInterval)

/** Compares digests with every peer that is up and copies what this node misses. */
export const repair = async (node: ClusterNode): Promise<void> => {
  const m = node.membership
  const self = node.self
  const startedAt = Date.now()
  const placement = m.current
  const settledBefore = Math.floor((startedAt - settleDelay(node)) / 60_000)
  for (const peer of m.current.members) {
    const link = node.links.get(peer)
    if (peer === self || link === undefined || !link.up) continue
    const mine = new Map((await run(node.local.replica.digests(peer))).map((c) => [c.minute, c]))
    const theirs = new Map(
      (
        (await link.call("digests", [self], node.settings.heartbeatTimeout * 4)) as ReadonlyArray<DigestCell>
      ).map((c) => [c.minute, c])
    )
    for (const minute of new Set([...mine.keys(), ...theirs.keys()])) {
      if (minute >= settledBefore) continue
      await yieldToIo()
      node.counters.repairMinutesCompared++
      if (sameCell(mine.get(minute), theirs.get(minute))) continue
      node.counters.repairMinutesMismatched++
      const theirList: Array<readonly [string, number]> = []
      const myList: Array<RecordEntry> = []
      for (let slice = 0; slice < recordSlices; slice++) {
        await yieldToIo()
        const theirs = (await link.call(
          "records",
          [minute, slice, self],
          node.settings.heartbeatTimeout * 4
        )) as ReadonlyArray<readonly [string, number]>
        for (const r of theirs) theirList.push(r)
        for (const r of await node.recordsFor(minute, slice, peer)) myList.push(r)
      }
      const have = new Set(myList.map((r) => r.id))
      const missing = theirList.filter(([id]) => !have.has(id))
      for (let i = 0; i < missing.length; i += chunk) {
        const exported = await link.call(
          "export",
          missing.slice(i, i + chunk).map(([id]) => id),
          node.settings.heartbeatTimeout * 12
        )
        node.counters.repairRecordsCopied += await node.importRecords(exported as Uint8Array)
      }
      const cell = cellOf(minute, [...myList.map((r) => r.hash), ...missing.map(([, hash]) => hash)])
      await run(node.local.replica.setDigests(peer, [cell]))
    }
  }
  node.counters.repairPasses++
  node.counters.repairLastPassAt = Date.now()
  // Begun once every member had settled, late enough that the minutes written during the move are
  // compared: what the move missed is here now.
  if (
    m.stableSince > 0 &&
    startedAt >= m.stableSince + settleDelay(node) + 60_000 &&
    m.current.id === placement.id
  )
    m.repaired = placement
}

/**
 * One step of background work: links, handoff, data moves, state changes, and a repair pass when
 * `repairDue` and the cluster is stable. Persisting membership is the caller's (`persist`).
 */
export const tick = async (
  node: ClusterNode,
  repairDue: boolean,
  persist: () => Promise<void>,
  log: (message: string) => void
): Promise<boolean> => {
  const m = node.membership
  node.syncLinks()
  await node.handOff().catch((e: unknown) => log(`hinted handoff stopped: ${String(e)}`))
  if (m.settled?.id !== m.current.id) {
    const from = m.settled?.members.length ?? 0
    if (!(await rebalance(node).catch((e: unknown) => log(`moving data stopped: ${String(e)}`)))) return false
    m.settle()
    await persist()
    log(
      `settled on ${m.current.members.length} members (from ${from}); moved ${node.counters.movedRecords} records so far`
    )
  }
  m.settleReads()
  if (m.selfState === "joining" && m.stable() && m.heardFromAll()) {
    m.setSelfState("up")
    log("this node is up")
  } else if (m.selfState === "leaving" && m.stable() && m.heardFromAll()) {
    m.setSelfState("left")
    await persist()
    log("this node has handed its data over and left the cluster")
  }
  if (repairDue && m.stable() && m.selfState === "up") {
    await repair(node).catch((e: unknown) => log(`anti-entropy pass stopped: ${String(e)}`))
    return true
  }
  return false
}
