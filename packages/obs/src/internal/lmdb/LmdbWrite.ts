/**
 * The ingest write path: applies a round of planned agent batches (`WritePlan.ts`) inside one LMDB
 * write transaction (group commit). Runs synchronously inside lmdb's transaction callback, so reads
 * here see this transaction's writes.
 */
import type { WriteOutcome } from "../../Store.js"
import { logCorrelationKey, micros, type ServiceInfoValue } from "./Keys.js"
import type { Layout } from "./LmdbLayout.js"
import { RedDeltas } from "./Red.js"
import type { BatchPlan } from "./WritePlan.js"

/** How stale a service's `lastSeen` may get before a write refreshes it (keeps writes rare). */
const lastSeenRefreshNano = 10_000_000_000n

export interface WriteState {
  /** The last ServiceInfoValue written per service, to skip redundant writes. */
  readonly services: Map<string, ServiceInfoValue>
}

export const makeWriteState = (layout: Layout): WriteState => {
  const services = new Map<string, ServiceInfoValue>()
  for (const { key, value } of layout.services.getRange()) services.set(key, value)
  return { services }
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

export const applyRound = (
  layout: Layout,
  state: WriteState,
  round: ReadonlyArray<BatchPlan>
): ReadonlyArray<WriteOutcome> => {
  const red = new RedDeltas()
  const highWater = new Map<string, number>()
  const outcomes: Array<WriteOutcome> = []
  for (const batch of round) {
    const previous = highWater.get(batch.agentId) ?? layout.agents.get(batch.agentId) ?? 0
    if (batch.seq <= previous) {
      outcomes.push("duplicate")
      continue
    }
    highWater.set(batch.agentId, batch.seq)
    const { table, bytes } = batch
    let offset = 0
    for (let t = 0; t < table.length; t += 3) {
      const valueStart = offset + (table[t + 1] ?? 0)
      const valueEnd = valueStart + (table[t + 2] ?? 0)
      layout.planned[table[t] ?? 0]?.put(
        bytes.subarray(offset, valueStart),
        bytes.subarray(valueStart, valueEnd)
      )
      offset = valueEnd
    }
    red.addSamples(batch.red)
    for (const [service, seen] of batch.services) noteService(layout, state, service, seen)
    batch.logs.forEach((log, index) => {
      const time = micros(log.timeUnixNano)
      const ck = logCorrelationKey(log)
      layout.logs.put([ck, time, batch.agentId, batch.seq, index], log)
      layout.logsByTime.put([time, batch.agentId, batch.seq, index], ck)
    })
    batch.metrics.forEach((point, index) => {
      layout.metrics.put([micros(point.timeUnixNano), batch.agentId, batch.seq, index], point)
    })
    outcomes.push("stored")
  }
  for (const [agentId, seq] of highWater) layout.agents.put(agentId, seq)
  red.flush(layout.red)
  return outcomes
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
