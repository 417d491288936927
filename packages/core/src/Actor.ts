/**
 * Actors on Effect fibers: a fiber that owns a bounded mailbox and handles one message at a time.
 *
 * - `send` suspends while the mailbox is full (back-pressure); `offer` never suspends and reports
 *   whether the message fit. A capacity-1 mailbox with `offer` coalesces triggers: "a run is already
 *   pending" is exactly what a level-based reconciler needs.
 * - An actor starts from a `Behavior`: a scoped effect that acquires what the actor needs and returns
 *   its message handler. Everything acquired lives in the *incarnation's* scope, released when the
 *   incarnation ends (it failed, or the actor stopped).
 * - When a handler (or the behavior's start) fails or dies, the `Supervision` decides: restart (see
 *   `Supervisor.restarting`) or give up. Without supervision the actor gives up at once.
 * - The mailbox belongs to the actor, not to an incarnation: messages queued while it restarts are
 *   kept, and by default the message whose handling failed is handled again first after the restart
 *   (at-least-once; for a reconciler that is the retry). `redeliver: false` drops it instead.
 * - `stop` interrupts the actor (even mid-message), releases its resources, discards queued messages
 *   and fails pending and later `send`/`offer` calls with `ActorStopped`. Closing the scope the actor
 *   was made in does the same.
 */
import { Cause, Deferred, Effect, Equal, ExecutionStrategy, Exit, Queue, Scope } from "effect"
import { ActorFailed, ActorStopped } from "./Errors.js"

/** Handles one message. A failure or defect ends the incarnation (see `Supervision`). */
export type Handler<in Msg, E = never, R = never> = (message: Msg) => Effect.Effect<void, E, R>

/**
 * How an actor (re)starts: acquire resources (in the provided `Scope`, which is the incarnation's)
 * and return the handler. Runs again on every restart, so state built here starts fresh.
 */
export type Behavior<Msg, E = never, R = never> = Effect.Effect<Handler<Msg, E, R>, E, R | Scope.Scope>

/** A behavior that is just a handler, with nothing to acquire. */
export const receive = <Msg, E = never, R = never>(handler: Handler<Msg, E, R>): Behavior<Msg, E, R> =>
  Effect.succeed(handler)

/** How an incarnation ended: its cause, and how many messages it handled successfully before. */
export interface IncarnationFailure {
  readonly cause: Cause.Cause<unknown>
  readonly handled: number
}

/**
 * Runs an actor's incarnations: given an effect that runs one incarnation until it fails, restart
 * it or fail with `ActorFailed` (giving up). Interruption (the actor being stopped) is not a failure
 * and never reaches a supervision.
 */
export type Supervision = <R>(
  incarnation: Effect.Effect<never, IncarnationFailure, R>,
  actor: string
) => Effect.Effect<never, ActorFailed, R>

/** Never restarts: the first failure gives the actor up. */
export const noRestart: Supervision = (incarnation, actor) =>
  Effect.flatMap(Effect.flip(incarnation), (failure) =>
    Effect.fail(new ActorFailed({ actor, restarts: 0, lastFailure: failure.cause }))
  )

export interface Options {
  /** Names the actor in errors and log annotations (`actor`). */
  readonly name: string
  /** Mailbox capacity, at least 1. */
  readonly capacity: number
  /** What happens when an incarnation fails; default `noRestart`. */
  readonly supervision?: Supervision
  /** Handle the message whose handling failed again after a restart; default true. */
  readonly redeliver?: boolean
}

export interface Actor<in Msg> {
  readonly name: string
  /** Enqueues `message`, suspending while the mailbox is full. */
  readonly send: (message: Msg) => Effect.Effect<void, ActorStopped>
  /** Enqueues `message` if there is room now: true if it was enqueued, false if the mailbox is full. */
  readonly offer: (message: Msg) => Effect.Effect<boolean, ActorStopped>
  /** Messages waiting, including those of senders suspended by back-pressure; 0 once stopped. */
  readonly mailboxSize: Effect.Effect<number>
  /** False once the actor has been stopped or given up. */
  readonly isAlive: Effect.Effect<boolean>
  /** Interrupts the actor and waits until its resources are released. Idempotent. */
  readonly stop: Effect.Effect<void>
  /** Succeeds when the actor is stopped, fails with `ActorFailed` when it is given up. */
  readonly await: Effect.Effect<void, ActorFailed>
}

/**
 * Starts an actor in the current scope (closing the scope stops it). The actor's fiber runs with the
 * context of the caller (`R`), not interrupted by the caller's interruption.
 */
export const make = <Msg, E = never, R = never>(
  behavior: Behavior<Msg, E, R>,
  options: Options
): Effect.Effect<Actor<Msg>, never, Exclude<R, Scope.Scope> | Scope.Scope> =>
  Effect.gen(function* () {
    const { name } = options
    if (!(Number.isSafeInteger(options.capacity) && options.capacity >= 1)) {
      return yield* Effect.dieMessage(
        `actor ${name}: capacity must be a positive integer, got ${options.capacity}`
      )
    }
    const redeliver = options.redeliver ?? true
    const mailbox = yield* Queue.bounded<Msg>(options.capacity)
    const done = yield* Deferred.make<void, ActorFailed>()
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    let open = true
    // The message being handled, kept for redelivery until its handler succeeds.
    let inFlight: { readonly message: Msg } | undefined
    let handled = 0

    const handleWith = (handler: Handler<Msg, E, R>) => (message: Msg) =>
      Effect.suspend(() => {
        if (redeliver) inFlight = { message }
        return handler(message)
      }).pipe(
        Effect.zipRight(
          Effect.sync(() => {
            inFlight = undefined
            handled++
          })
        )
      )

    const incarnation: Effect.Effect<never, IncarnationFailure, Exclude<R, Scope.Scope>> = Effect.gen(
      function* () {
        handled = 0
        const handle = handleWith(yield* behavior)
        if (inFlight !== undefined) yield* handle(inFlight.message)
        return yield* Effect.forever(Effect.flatMap(Queue.take(mailbox), handle))
      }
    ).pipe(
      Effect.scoped,
      Effect.sandbox,
      // After `stop` the incarnation ends by interruption (or, when it stopped itself, by a failed
      // take from the closed mailbox): that ends the actor, it is not a failure to supervise.
      Effect.catchAll((cause) =>
        open ? Effect.fail<IncarnationFailure>({ cause, handled }) : Effect.interrupt
      )
    )

    yield* Scope.addFinalizer(
      scope,
      Effect.suspend(() => {
        open = false
        return Queue.shutdown(mailbox)
      }).pipe(Effect.zipRight(Deferred.succeed(done, undefined)))
    )
    const supervision = options.supervision ?? noRestart
    const fiber = yield* supervision(incarnation, name).pipe(
      Effect.catchAll((failed) =>
        Deferred.fail(done, failed).pipe(Effect.zipRight(Scope.close(scope, Exit.void)))
      ),
      Effect.annotateLogs("actor", name),
      // The fiber must stay interruptible (that is how `stop` works) even when made in an
      // uninterruptible region, whose flags a forked fiber would otherwise inherit.
      Effect.interruptible,
      Effect.forkIn(scope)
    )

    const stopped = Effect.fail(new ActorStopped({ actor: name }))
    const actor: Actor<Msg> = {
      name,
      send: (message) =>
        Effect.suspend(() => (open ? Queue.offer(mailbox, message) : stopped)).pipe(
          // A sender suspended on a full mailbox is released by the shutdown with an interruption.
          Effect.catchAllCause((cause) =>
            Cause.isInterruptedOnly(cause) && !open ? stopped : Effect.failCause(cause)
          ),
          Effect.asVoid
        ),
      offer: (message) =>
        Effect.suspend(() => (open ? Effect.succeed(Queue.unsafeOffer(mailbox, message)) : stopped)),
      mailboxSize: Effect.suspend(() =>
        open ? Effect.map(Queue.size(mailbox), (size) => Math.max(0, size)) : Effect.succeed(0)
      ),
      isAlive: Effect.sync(() => open),
      stop: Effect.fiberIdWith((caller) =>
        Scope.close(scope, Exit.void).pipe(
          // Closing the scope cannot interrupt the fiber doing the closing: an actor stopping itself
          // ends its current message here instead.
          Effect.zipRight(Equal.equals(caller, fiber.id()) ? Effect.interrupt : Effect.void)
        )
      ),
      await: Deferred.await(done)
    }
    return actor
  })
