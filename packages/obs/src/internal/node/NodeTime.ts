/**
 * The node's time: the wall clock is Effect's `Clock` (tests inject one that jumps), queries and the
 * ingest window read it; retention reads the guarded `RetentionClock` built on it.
 */
import { Duration, Effect, Option } from "effect"
import { type Dated, misfit, newestStart } from "./IngestWindow.js"
import { RetentionClock } from "./RetentionClock.js"

export interface NodeTime {
  /** The wall clock, unix milliseconds. */
  readonly nowMs: () => number
  /** Why a batch does not fit the ingest window (undefined when it does); a fitting one advances retention's clock. */
  readonly misfit: (batch: Dated) => string | undefined
  /** Unix nanoseconds before which retention deletes. */
  readonly retentionCutoff: () => bigint
}

const nanos = (d: Duration.Duration) => Duration.toNanos(d).pipe(Option.getOrElse(() => 0n))

export const make = (options: {
  readonly retention: Duration.Duration
  readonly maxClockSkew: Duration.Duration
  /** The newest span start already stored, if any. */
  readonly newestStored: bigint | undefined
}): Effect.Effect<NodeTime> =>
  Effect.map(Effect.clock, (clock) => {
    const wallNano = () => BigInt(clock.unsafeCurrentTimeMillis()) * 1_000_000n
    const retention = new RetentionClock({
      wallNano,
      monotonicMs: () => performance.now(),
      newestStored: options.newestStored
    })
    const window = { retentionNano: nanos(options.retention), maxSkewNano: nanos(options.maxClockSkew) }
    return {
      nowMs: () => clock.unsafeCurrentTimeMillis(),
      misfit: (batch) => {
        const why = misfit(batch, wallNano(), window)
        if (why === undefined) {
          const newest = newestStart(batch.spans)
          if (newest !== undefined) retention.observe(newest)
        }
        return why
      },
      retentionCutoff: () => retention.now() - window.retentionNano
    }
  })
