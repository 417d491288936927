/**
 * One reconciler actor per composition key. A key's mailbox holds at most one pending "reconcile"
 * (further requests while one is pending coalesce: reconciles are level-based, so one run covers them).
 * Failures are retried with per-key exponential backoff and a global token bucket; a key that is gone
 * stops its actor. Reconciles of all keys share a concurrency bound.
 */
import { Duration, Effect, FiberSet, Queue, type Scope } from "effect"
import type { KubeApiError } from "../Errors.js"
import type { Outcome } from "./Reconcile.js"

export interface Options {
  readonly backoff: { readonly initial: Duration.Duration; readonly max: Duration.Duration }
  readonly retryRateLimit: { readonly perSecond: number; readonly burst: number }
  readonly concurrency: number
  readonly reconcile: (key: string) => Effect.Effect<Outcome, KubeApiError>
}

export interface Actors {
  readonly enqueue: (key: string) => void
  readonly keys: Effect.Effect<ReadonlyArray<string>>
}

/** Delay before retry number `failures` (1-based): initial · 2^(failures-1), capped. */
export const backoffDelay = (failures: number, initial: Duration.Duration, max: Duration.Duration) =>
  Duration.min(Duration.times(initial, 2 ** Math.min(failures - 1, 40)), max)

/** A token bucket: `take` returns how long to wait before the taken token is usable. */
export const tokenBucket = (perSecond: number, burst: number, now: () => number) => {
  let tokens = burst
  let last = now()
  return {
    take: (): Duration.Duration => {
      const t = now()
      tokens = Math.min(burst, tokens + ((t - last) / 1000) * perSecond)
      last = t
      tokens -= 1
      return tokens >= 0 ? Duration.zero : Duration.millis((-tokens / perSecond) * 1000)
    }
  }
}

export const make = (options: Options): Effect.Effect<Actors, never, Scope.Scope> =>
  Effect.gen(function* () {
    // Fibers started from synchronous informer callbacks; all interrupted when the scope closes.
    const fibers = yield* FiberSet.make()
    const runFork = yield* FiberSet.runtime(fibers)<never>()
    const permits = yield* Effect.makeSemaphore(options.concurrency)
    const mailboxes = new Map<string, Queue.Queue<void>>()
    const failures = new Map<string, number>()
    const bucket = tokenBucket(options.retryRateLimit.perSecond, options.retryRateLimit.burst, Date.now)

    const retryLater = (key: string) => {
      const n = (failures.get(key) ?? 0) + 1
      failures.set(key, n)
      const delay = Duration.sum(backoffDelay(n, options.backoff.initial, options.backoff.max), bucket.take())
      runFork(Effect.sleep(delay).pipe(Effect.zipRight(Effect.sync(() => enqueue(key)))))
    }

    const actor = (key: string, mailbox: Queue.Queue<void>) =>
      Effect.gen(function* () {
        while (true) {
          yield* Queue.take(mailbox)
          const result = yield* permits.withPermits(1)(Effect.either(options.reconcile(key)))
          if (result._tag === "Left") {
            yield* Effect.logWarning(`reconcile ${key} failed: ${result.left.message}`)
            retryLater(key)
          } else if (result.right === "gone") {
            failures.delete(key)
            mailboxes.delete(key)
            return
          } else failures.delete(key)
        }
      })

    const enqueue = (key: string) => {
      let mailbox = mailboxes.get(key)
      if (mailbox === undefined) {
        mailbox = Effect.runSync(Queue.dropping<void>(1))
        mailboxes.set(key, mailbox)
        runFork(actor(key, mailbox))
      }
      mailbox.unsafeOffer(undefined)
    }

    yield* Effect.addFinalizer(() => Effect.sync(() => mailboxes.clear()))
    return { enqueue, keys: Effect.sync(() => [...mailboxes.keys()]) }
  })
