/**
 * Supervision for actors: restarts with exponential backoff and jitter within a restart budget, and
 * a keyed set of supervised actors (one per key, e.g. one reconciler per `namespace/name`).
 *
 * Restart timing: the n-th consecutive restart (n = 0, 1, …) waits
 * `min(cap, base · factor^n) · (1 − jitter · r)` with r uniform in [0, 1) from `random`. n counts
 * the restarts since the last sign of health: it resets when the failed incarnation had handled a
 * message successfully, or when no restart happened within the budget's window.
 *
 * Budget: at most `maxRestarts` restarts within any sliding `window`; the failure that would exceed
 * it gives the actor up: `actor.await` fails with `ActorFailed`, the supervisor drops the actor and
 * calls `onGiveUp`. With the defaults, an actor that fails on every start is given up after its
 * 10th restart, about 80 s after the first failure; an actor that fails now and then never is.
 *
 * A supervisor lives in a scope: closing the scope stops every actor (as `stopAll` does), and the
 * supervisor starts no more. `stopAll` alone leaves it usable, e.g. for a controller that loses
 * leadership and may win it back.
 */
import { Clock, Duration, Effect, ExecutionStrategy, Option, Random, Scope } from "effect"
import * as Actor from "./Actor.js"
import { ActorFailed, SupervisorClosed } from "./Errors.js"

export interface RestartPolicy {
  readonly base: Duration.Duration
  readonly factor: number
  readonly cap: Duration.Duration
  /** 0 (no jitter) to 1 (anywhere from 0 to the full delay). */
  readonly jitter: number
  readonly maxRestarts: number
  readonly window: Duration.Duration
  /** Uniform numbers in [0, 1) for jitter. */
  readonly random: Effect.Effect<number>
}

export interface RestartPolicyOptions {
  /** First restart delay; default 100 millis. */
  readonly base?: Duration.DurationInput
  /** Growth per consecutive restart, at least 1; default 2. */
  readonly factor?: number
  /** Longest delay; default 30 seconds. */
  readonly cap?: Duration.DurationInput
  /** Fraction of the delay that is random, in [0, 1]; default 0.2. */
  readonly jitter?: number
  /** Restarts allowed within `window`, at least 0; default 10. */
  readonly maxRestarts?: number
  /** Sliding window of the restart budget; default 5 minutes. */
  readonly window?: Duration.DurationInput
  /** Source of jitter; default Effect's `Random.next` (so `Effect.withRandom` controls it too). */
  readonly random?: Effect.Effect<number>
}

/**
 * A restart policy; unset fields take the documented defaults. Throws `RangeError` for settings
 * outside their ranges: those are programming errors, not data.
 */
export const restartPolicy = (options: RestartPolicyOptions = {}): RestartPolicy => {
  const policy: RestartPolicy = {
    base: Duration.decode(options.base ?? Duration.millis(100)),
    factor: options.factor ?? 2,
    cap: Duration.decode(options.cap ?? Duration.seconds(30)),
    jitter: options.jitter ?? 0.2,
    maxRestarts: options.maxRestarts ?? 10,
    window: Duration.decode(options.window ?? Duration.minutes(5)),
    random: options.random ?? Random.next
  }
  const check = (ok: boolean, what: string) => {
    if (!ok) throw new RangeError(`restart policy: ${what}`)
  }
  check(Duration.isFinite(policy.base), "base must be finite")
  check(
    policy.factor >= 1 && Number.isFinite(policy.factor),
    `factor must be at least 1, got ${policy.factor}`
  )
  check(Duration.isFinite(policy.cap), "cap must be finite")
  check(policy.jitter >= 0 && policy.jitter <= 1, `jitter must be within [0, 1], got ${policy.jitter}`)
  check(
    Number.isSafeInteger(policy.maxRestarts) && policy.maxRestarts >= 0,
    `maxRestarts must be a non-negative integer, got ${policy.maxRestarts}`
  )
  check(Duration.toMillis(policy.window) > 0, "window must be positive")
  return policy
}

/** The delay before the `attempt`-th consecutive restart (0-based), given a random `r` in [0, 1). */
export const backoff = (policy: RestartPolicy, attempt: number, r: number): Duration.Duration => {
  const exponential = Duration.toMillis(policy.base) * policy.factor ** attempt
  const capped = Math.min(Duration.toMillis(policy.cap), exponential)
  return Duration.millis(capped * (1 - policy.jitter * r))
}

/** A `Supervision` that restarts by `policy` and gives up when its budget is exhausted. */
export const restarting =
  (policy: RestartPolicy = restartPolicy()): Actor.Supervision =>
  (incarnation, actor) =>
    Effect.gen(function* () {
      const windowMillis = Duration.toMillis(policy.window)
      const recentRestarts: Array<number> = []
      let restarts = 0
      let consecutive = 0
      while (true) {
        const failure = yield* Effect.flip(incarnation)
        const now = yield* Clock.currentTimeMillis
        while ((recentRestarts[0] ?? now) <= now - windowMillis) recentRestarts.shift()
        if (recentRestarts.length >= policy.maxRestarts) {
          yield* Effect.logError(`giving up after ${restarts} restart(s)`, failure.cause)
          return yield* Effect.fail(new ActorFailed({ actor, restarts, lastFailure: failure.cause }))
        }
        if (failure.handled > 0 || recentRestarts.length === 0) consecutive = 0
        const delay = backoff(policy, consecutive, yield* policy.random)
        consecutive++
        restarts++
        recentRestarts.push(now)
        yield* Effect.logWarning(`failed; restart ${restarts} in ${Duration.format(delay)}`, failure.cause)
        yield* Effect.sleep(delay)
      }
    })

export interface Options {
  /** How actors restart; default `restartPolicy()`. Each `spawn` may override it. */
  readonly restart?: RestartPolicy
  /** Called (outside the supervisor's lock) after an actor is given up and dropped. */
  readonly onGiveUp?: (key: string, error: ActorFailed) => Effect.Effect<void>
}

export interface SpawnOptions {
  /** Mailbox capacity, at least 1. */
  readonly capacity: number
  /** See `Actor.Options.redeliver`; default true. */
  readonly redeliver?: boolean
  /** Overrides the supervisor's restart policy for this actor. */
  readonly restart?: RestartPolicy
}

export interface Supervisor<Msg> {
  /**
   * Starts `behavior` as the actor for `key`, or returns the live actor already there (the given
   * behavior is then unused). Fails with `SupervisorClosed` once the supervisor's scope has closed.
   */
  readonly spawn: <E, R>(
    key: string,
    behavior: Actor.Behavior<Msg, E, R>,
    options: SpawnOptions
  ) => Effect.Effect<Actor.Actor<Msg>, SupervisorClosed, Exclude<R, Scope.Scope>>
  /** The live actor for `key`, if any. */
  readonly get: (key: string) => Effect.Effect<Option.Option<Actor.Actor<Msg>>>
  /** Stops the actor for `key` (if any) and waits until its resources are released; others are untouched. */
  readonly stop: (key: string) => Effect.Effect<void>
  /** Stops every actor, concurrently, and waits for all; the supervisor stays usable. */
  readonly stopAll: Effect.Effect<void>
  /** Keys of the actors started and not yet stopped or given up. */
  readonly keys: Effect.Effect<ReadonlyArray<string>>
}

/** A supervisor living in the current scope. */
export const make = <Msg>(options: Options = {}): Effect.Effect<Supervisor<Msg>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const defaultPolicy = options.restart ?? restartPolicy()
    const onGiveUp = options.onGiveUp ?? (() => Effect.void)
    const actors = new Map<string, Actor.Actor<Msg>>()
    const lock = yield* Effect.makeSemaphore(1)
    let closed = false
    // Actors live in a child scope, closed after the finalizer below has refused further spawns.
    const actorScope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.parallel)
    yield* Effect.addFinalizer(() =>
      lock.withPermits(1)(
        Effect.sync(() => {
          closed = true
          actors.clear()
        })
      )
    )

    const live = (key: string) =>
      Effect.gen(function* () {
        const actor = actors.get(key)
        if (actor === undefined) return Option.none()
        if (yield* actor.isAlive) return Option.some(actor)
        actors.delete(key)
        return Option.none()
      })

    const forget = (key: string, actor: Actor.Actor<Msg>) =>
      lock.withPermits(1)(
        Effect.sync(() => {
          if (actors.get(key) === actor) actors.delete(key)
        })
      )

    // Actors leave the map under the lock but are stopped outside it, so a slow finalizer does not hold
    // up spawns of other keys. Uninterruptible (as closing a scope is anyway): an actor taken out of
    // the map must be stopped.
    const stopTaken = (take: () => ReadonlyArray<Actor.Actor<Msg>>) =>
      Effect.uninterruptible(
        lock
          .withPermits(1)(Effect.sync(take))
          .pipe(
            Effect.flatMap((taken) =>
              Effect.forEach(taken, (actor) => actor.stop, { concurrency: "unbounded", discard: true })
            )
          )
      )

    const supervisor: Supervisor<Msg> = {
      spawn: (key, behavior, spawnOptions) =>
        lock.withPermits(1)(
          // Uninterruptible: an interrupted caller must not leave a started actor out of the map.
          Effect.uninterruptible(
            Effect.gen(function* () {
              if (closed) return yield* Effect.fail(new SupervisorClosed({ actor: key }))
              const existing = yield* live(key)
              if (Option.isSome(existing)) return existing.value
              const actor = yield* Actor.make(behavior, {
                name: key,
                capacity: spawnOptions.capacity,
                supervision: restarting(spawnOptions.restart ?? defaultPolicy),
                ...(spawnOptions.redeliver === undefined ? {} : { redeliver: spawnOptions.redeliver })
              }).pipe(Scope.extend(actorScope))
              actors.set(key, actor)
              yield* actor.await.pipe(
                Effect.catchAll((error) => forget(key, actor).pipe(Effect.zipRight(onGiveUp(key, error)))),
                Effect.interruptible,
                Effect.forkIn(actorScope)
              )
              return actor
            })
          )
        ),
      get: (key) => lock.withPermits(1)(live(key)),
      stop: (key) =>
        stopTaken(() => {
          const actor = actors.get(key)
          actors.delete(key)
          return actor === undefined ? [] : [actor]
        }),
      stopAll: stopTaken(() => {
        const all = [...actors.values()]
        actors.clear()
        return all
      }),
      keys: lock.withPermits(1)(
        Effect.suspend(() => Effect.filter([...actors.keys()], (key) => Effect.map(live(key), Option.isSome)))
      )
    }
    return supervisor
  })
