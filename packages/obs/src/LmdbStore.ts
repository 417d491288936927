/**
 * The LMDB implementation of the store interfaces (`Store.ts`): one environment in a data directory,
 * named databases laid out in `internal/lmdb/Keys.ts`. Writes are durable: a round succeeds only
 * after its transaction is committed and flushed to disk. Everything it is made of lives in
 * `internal/lmdb/`.
 */
import { statfsSync } from "node:fs"
import { Errors } from "@iii/core"
import { Context, Effect, Either, Layer, type Scope } from "effect"
import { DataDirError, StoreError, UnindexableSpan } from "./Errors.js"
import * as DataDir from "./internal/lmdb/DataDir.js"
import { openLayout } from "./internal/lmdb/LmdbLayout.js"
import * as Read from "./internal/lmdb/LmdbRead.js"
import * as Replica from "./internal/lmdb/LmdbReplica.js"
import { deleteOlderThan } from "./internal/lmdb/LmdbRetention.js"
import { commitRound, makeWriteState, type WriteState } from "./internal/lmdb/LmdbWrite.js"
import { decodePlan, encodePlan } from "./internal/lmdb/PlanCodec.js"
import * as WorkerWriter from "./internal/lmdb/WorkerWriter.js"
import { type BatchPlan, planBatch, type RoundWriter } from "./internal/lmdb/WritePlan.js"
import {
  BatchWriter,
  type BatchWriterService,
  type IngestBatch,
  makeBatchWriter,
  type ReplicaService,
  Replica as ReplicaTag,
  SpanReader,
  type SpanReaderService,
  StoreMaintenance,
  type StoreMaintenanceService,
  type Stores
} from "./Store.js"

export interface LmdbStoreConfig {
  /** Directory of the LMDB environment; created when missing. */
  readonly path: string
  /** Initial map size in bytes (default 1 GiB); lmdb grows it as data arrives. */
  readonly mapSize?: number
  /**
   * Run write transactions in a worker thread (default false): LMDB puts and commits then use
   * another core while this thread serves sockets, decodes, encodes the records (`WritePlan`) and
   * answers queries. `ObsNode` turns it on.
   */
  readonly writerThread?: boolean
}

/** The three store services, the writer with the LMDB plan type (`internal/lmdb/WritePlan.ts`). */
export interface LmdbStores extends Stores {
  readonly writer: BatchWriterService<BatchPlan>
  readonly replica: ReplicaService
}

/** Plans a batch into the exact bytes LMDB stores; Left for a span an index key cannot hold. */
const plan = (batch: IngestBatch): Either.Either<BatchPlan, UnindexableSpan> => {
  try {
    return Either.right(planBatch(batch))
  } catch (e) {
    if (e instanceof UnindexableSpan) return Either.left(e)
    throw e
  }
}

/**
 * A failed commit's cause with the free space of the data directory's filesystem: LMDB reports a
 * full disk as an I/O error (a short write), so the figure tells the operator which it was.
 */
const withFreeSpace = (cause: unknown, path: string): Error => {
  const message = Errors.messageOf(cause)
  try {
    const fs = statfsSync(path)
    return new Error(
      `${message}; ${((fs.bavail * fs.bsize) / 1048576).toFixed(1)} MiB free on the data directory's filesystem`
    )
  } catch {
    return new Error(message)
  }
}

const sync =
  (operation: string) =>
  <A>(f: () => A): Effect.Effect<A, StoreError> =>
    Effect.try({ try: f, catch: (cause) => new StoreError({ operation, cause }) })

/**
 * Opens the environment for the scope's lifetime; closing waits for pending writes. A directory that
 * cannot be created or written, or an environment that cannot be opened, fails with `DataDirError`.
 */
export const make = (
  config: LmdbStoreConfig
): Effect.Effect<LmdbStores, StoreError | DataDirError, Scope.Scope> =>
  Effect.gen(function* () {
    yield* DataDir.prepare(config.path)
    // Retention passes run as promises; closing waits for the one in flight, which stops at its next chunk.
    let closing = false
    let retention: Promise<unknown> = Promise.resolve()
    const layout = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          openLayout({ path: config.path, ...(config.mapSize !== undefined && { mapSize: config.mapSize }) }),
        catch: (cause) =>
          new DataDirError({
            path: config.path,
            reason: `cannot open its LMDB environment: ${Errors.messageOf(cause)}`,
            cause
          })
      }),
      (l) =>
        Effect.promise(async () => {
          closing = true
          await retention.catch(() => undefined)
          await l.env.close().catch(() => undefined)
        })
    )
    const inThreadWriter = (state: WriteState): RoundWriter => ({
      writeRound: (round) =>
        Effect.tryPromise({
          // lmdb's asynchronous transaction: built on this thread, committed by lmdb's writer thread
          // while the next one builds; commitRound then waits for the fsync that makes it durable.
          try: () => commitRound(layout, state, round),
          catch: (cause) => new StoreError({ operation: "write", cause })
        })
    })

    // Acquired after the environment, so released (drained, closed) before it.
    const rounds = config.writerThread
      ? yield* WorkerWriter.make({
          path: config.path,
          ...(config.mapSize !== undefined && { mapSize: config.mapSize })
        })
      : inThreadWriter(yield* sync("open")(() => makeWriteState(layout)))
    // A round committed by the writer thread is invisible to this thread's cached read snapshot until
    // lmdb renews it on a timer; a query right after an acknowledgement must see what was acknowledged.
    const writeRound: RoundWriter["writeRound"] = config.writerThread
      ? (round) => Effect.tap(rounds.writeRound(round), () => Effect.sync(() => layout.env.resetReadTxn()))
      : rounds.writeRound
    // What was opened, and whether the path still leads there: checked after every round, before
    // it is acknowledged, and by `check`. Once lost, the store stays lost and writes nothing more.
    const identity = yield* Effect.try({
      try: () => DataDir.identify(config.path),
      catch: (cause) =>
        new DataDirError({ path: config.path, reason: `cannot stat its files: ${String(cause)}`, cause })
    })
    let lost: string | undefined
    const lostNow = () => {
      lost ??= DataDir.changed(identity)
      return lost
    }
    const storeLost = (operation: string) => new StoreError({ operation, cause: new Error(lost) })
    const writer = makeBatchWriter({
      plan,
      encode: encodePlan,
      decode: decodePlan,
      writeRound: (round) =>
        lost !== undefined
          ? Effect.fail(storeLost("write"))
          : writeRound(round).pipe(
              Effect.mapError(
                (e) => new StoreError({ operation: "write", cause: withFreeSpace(e.cause, config.path) })
              ),
              Effect.flatMap((outcomes) =>
                lostNow() === undefined ? Effect.succeed(outcomes) : Effect.fail(storeLost("write"))
              )
            )
    })

    const reader: SpanReaderService = {
      trace: (traceId) => sync("trace")(() => Read.readTrace(layout, traceId)),
      searchTraces: (query) => sync("searchTraces")(() => Read.searchTraces(layout, query)),
      correlatedTraceIds: (id, limit) => sync("correlate")(() => Read.correlatedTraceIds(layout, id, limit)),
      logs: (id, limit) => sync("logs")(() => Read.readLogs(layout, id, limit)),
      red: (service, route, fromSec, toSec) =>
        sync("red")(() => Read.readRed(layout, service, route, fromSec, toSec)),
      services: () => sync("services")(() => Read.readServices(layout))
    }

    const maintenance: StoreMaintenanceService = {
      check: () =>
        Effect.suspend(() => (lostNow() === undefined ? Effect.void : Effect.fail(storeLost("check")))),
      deleteOlderThan: (cutoff) =>
        Effect.tryPromise({
          try: () => {
            const pass = deleteOlderThan(layout, cutoff, () => closing)
            retention = pass
            return pass
          },
          catch: (cause) => new StoreError({ operation: "retention", cause })
        }),
      newestSpanStart: () => sync("newestSpanStart")(() => Read.newestSpanStart(layout)),
      stats: () =>
        sync("stats")(() => {
          const env = layout.env.getStats() as { pageSize?: number; lastPageNumber?: number }
          const spans = layout.spans.getStats() as { entryCount?: number }
          return {
            bytes: (env.pageSize ?? 4096) * ((env.lastPageNumber ?? 0) + 1),
            spans: spans.entryCount ?? 0
          }
        })
    }
    const replica: ReplicaService = {
      putHint: (target, bytes) =>
        Effect.tryPromise({
          try: () => Replica.putHint(layout, target, bytes),
          catch: (cause) => new StoreError({ operation: "hint", cause })
        }),
      hints: (target, limit) => sync("hints")(() => Replica.hints(layout, target, limit)),
      deleteHints: (target, ids) =>
        Effect.tryPromise({
          try: () => Replica.deleteHints(layout, target, ids),
          catch: (cause) => new StoreError({ operation: "hint handoff", cause })
        }),
      hintStats: () => sync("hints")(() => Replica.hintStats(layout)),
      digests: (peer) => sync("digests")(() => Replica.digests(layout, peer)),
      setDigests: (peer, cells) =>
        Effect.tryPromise({
          try: () => Replica.setDigests(layout, peer, cells),
          catch: (cause) => new StoreError({ operation: "digests", cause })
        }),
      minutes: () => sync("repair")(() => Replica.minutes(layout)),
      records: (minute, slice) => sync("repair")(() => Replica.records(layout, minute, slice)),
      exportRecords: (ids) => sync("repair")(() => Replica.exportRecords(layout, ids)),
      importRecords: (bytes) => sync("repair")(() => Replica.importRecords(bytes)),
      getSetting: (name) => sync("settings")(() => layout.meta.get(name)),
      putSetting: (name, value) =>
        Effect.tryPromise({
          try: async () => {
            await layout.meta.put(name, value)
            await layout.env.flushed
          },
          catch: (cause) => new StoreError({ operation: "settings", cause })
        })
    }
    return { writer, reader, maintenance, replica }
  })

/** Provides BatchWriter, SpanReader, StoreMaintenance and Replica backed by one LMDB environment. */
export const layer = (
  config: LmdbStoreConfig
): Layer.Layer<BatchWriter | SpanReader | StoreMaintenance | ReplicaTag, StoreError | DataDirError> =>
  Layer.scopedContext(
    Effect.map(make(config), (s) =>
      Context.make(BatchWriter, s.writer).pipe(
        Context.add(SpanReader, s.reader),
        Context.add(StoreMaintenance, s.maintenance),
        Context.add(ReplicaTag, s.replica)
      )
    )
  )
