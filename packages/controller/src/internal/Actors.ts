/**
 * One reconciler actor per composition key (core's Actor, under core's Supervisor). A key's mailbox
 * holds at most one pending "reconcile" (further requests while one is pending coalesce: reconciles
 * are level-based, so one run covers them).
 * Failures are retried with per-key exponential backoff and a global token bucket; a key that is gone
 * stops its actor. Reconciles of all keys share a concurrency bound.
 */
import { Actor, Supervisor } from "@iii/core"
import { Duration, Effect, Either, FiberSet, Queue, type Scope } from "effect"
import type { KubeApiError } from "../Errors.js"
import type { Outcome } from "./Reconcile.js"

export interface Options {
  readonly backoff: { readonly initial: Duration.Duration; readonly max: Duration.Duration }
  readonly retryRateLimit: { readonly perSecond: number; readonly burst: number }
  readonly concurrency: number
  readonly reconcile: (key: string) => Effect.Effect<Outcome, KubeApiError>
}

/** The one message a reconciler actor handles: "reconcile your key now". */
type Reconcile = "reconcile"

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
    // Concurrency bound as a pool of tokens in a queue. (An Effect Semaphore with hundreds of actors
    // waiting on it held ~600-frame continuations per waiter here: 190 MB of live heap in the 500
    // composition benchmark, against 70 MB with this pool.)
    const tokens = yield* Queue.bounded<true>(options.concurrency)
    yield* Queue.offerAll(
      tokens,
      Array.from({ length: options.concurrency }, () => true as const)
    )
    const withToken = <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.acquireUseRelease(
        Queue.take(tokens),
        () => effect,
        () => Queue.offer(tokens, true)
      )
    const failures = new Map<string, number>()
    const bucket = tokenBucket(options.retryRateLimit.perSecond, options.retryRateLimit.burst, Date.now)
    const supervisor = yield* Supervisor.make<Reconcile>({
      onGiveUp: (key, error) => Effect.logError(`reconciler ${key} given up: ${error.message}`)
    })

    const retryLater = (key: string) => {
      const n = (failures.get(key) ?? 0) + 1
      failures.set(key, n)
      const delay = Duration.sum(backoffDelay(n, options.backoff.initial, options.backoff.max), bucket.take())
      runFork(Effect.sleep(delay).pipe(Effect.zipRight(Effect.sync(() => enqueue(key)))))
    }

    // A failed reconcile (API error) is retried with backoff by this handler; a defect fails the
    // incarnation, and the supervisor restarts the actor (redelivering the message).
    const behavior = (key: string) =>
      Actor.receive<Reconcile>(() =>
        Effect.gen(function* () {
          // From here on, a new request for the key needs a new run.
          pending.delete(key)
          const result = yield* withToken(Effect.either(options.reconcile(key)))
          if (Either.isLeft(result)) {
            retryLater(key)
            return yield* Effect.logWarning(`reconcile ${key} failed: ${result.left.message}`)
          }
          failures.delete(key)
          // Gone: stop this actor (from another fiber: an actor cannot wait for its own stop).
          if (result.right === "gone") runFork(supervisor.stop(key))
        })
      )

    const deliver = (key: string) =>
      Effect.flatMap(supervisor.spawn(key, behavior(key), { capacity: 1 }), (actor) =>
        actor.offer("reconcile")
      ).pipe(
        // Spawned while the previous actor for the key was stopping: spawn again.
        Effect.retry({ times: 3, while: (e) => e._tag === "ActorStopped" }),
        Effect.flatMap((delivered) => (delivered ? Effect.void : Effect.sync(() => pending.delete(key)))),
        Effect.catchAll((e) =>
          Effect.sync(() => pending.delete(key)).pipe(
            Effect.zipRight(Effect.logDebug(`enqueue ${key}: ${e._tag}`))
          )
        )
      )

    // Keys with a reconcile requested and not yet started: further requests are absorbed right here,
    // without a fiber each (bursts of watch events would otherwise start thousands). Behind it, the
    // mailbox of capacity 1 with `offer` coalesces the same way.
    const pending = new Set<string>()
    const enqueue = (key: string) => {
      if (pending.has(key)) return
      pending.add(key)
      runFork(
        deliver(key).pipe(
          Effect.onExit((exit) =>
            // Not delivered (stopped supervisor, or the actor kept stopping): do not block the key.
            Effect.sync(() => {
              if (exit._tag === "Failure") pending.delete(key)
            })
          )
        )
      )
    }

    return { enqueue, keys: supervisor.keys }
  })
