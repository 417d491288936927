import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Option, TestClock } from "effect"
import * as Actor from "../src/Actor.js"
import { ActorFailed, ActorStopped } from "../src/Errors.js"

/** The failure of an effect that must fail, as its tagged error (undefined if it succeeded). */
const failureOf = <E>(effect: Effect.Effect<unknown, E>) =>
  Effect.map(Effect.flip(effect), (error) => error as E | undefined).pipe(
    Effect.catchAllCause(() => Effect.succeed(undefined))
  )

describe("Actor", () => {
  it.scoped("handles one message at a time, in mailbox order", () =>
    Effect.gen(function* () {
      const log: Array<string> = []
      let active = 0
      let maxActive = 0
      const actor = yield* Actor.make(
        Actor.receive((n: number) =>
          Effect.gen(function* () {
            active++
            maxActive = Math.max(maxActive, active)
            log.push(`start ${n}`)
            // Later messages take less time: run concurrently, they would finish first.
            yield* Effect.sleep(`${10 * (4 - n)} millis`)
            log.push(`end ${n}`)
            active--
          })
        ),
        { name: "serial", capacity: 8 }
      )
      yield* Effect.forEach([1, 2, 3], (n) => actor.send(n))
      yield* TestClock.adjust("1 second")
      expect(log).toEqual(["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"])
      expect(maxActive).toBe(1)
    })
  )

  it.scoped("back-pressures send when the mailbox is full; offer reports full without waiting", () =>
    Effect.gen(function* () {
      const busy = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const allHandled = yield* Deferred.make<void>()
      const handled: Array<number> = []
      const actor = yield* Actor.make(
        Actor.receive((n: number) =>
          Effect.gen(function* () {
            yield* Deferred.succeed(busy, undefined)
            yield* Deferred.await(release)
            handled.push(n)
            if (n === 5) yield* Deferred.succeed(allHandled, undefined)
          })
        ),
        { name: "bounded", capacity: 2 }
      )
      yield* actor.send(1)
      yield* Deferred.await(busy) // 1 is being handled; the mailbox is empty again
      yield* actor.send(2)
      yield* actor.send(3)
      expect(yield* actor.offer(4)).toBe(false)
      const blockedSender = yield* Effect.fork(actor.send(5))
      yield* Effect.yieldNow()
      expect(yield* Fiber.poll(blockedSender)).toEqual(Option.none())
      expect(yield* actor.mailboxSize).toBe(3)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(blockedSender)
      yield* Deferred.await(allHandled)
      expect(handled).toEqual([1, 2, 3, 5])
      expect(yield* actor.offer(6)).toBe(true)
    })
  )

  it.scoped("stop interrupts the current message, releases resources and fails senders", () =>
    Effect.gen(function* () {
      const log: Array<string> = []
      const busy = yield* Deferred.make<void>()
      const actor = yield* Actor.make(
        Effect.gen(function* () {
          yield* Effect.acquireRelease(
            Effect.sync(() => log.push("acquire")),
            () => Effect.sync(() => log.push("release"))
          )
          return (message: string) =>
            message === "block"
              ? Deferred.succeed(busy, undefined).pipe(
                  Effect.zipRight(Effect.never),
                  Effect.onInterrupt(() => Effect.sync(() => log.push("interrupted")))
                )
              : Effect.sync(() => log.push(`handled ${message}`))
        }),
        { name: "stoppable", capacity: 1 }
      )
      yield* actor.send("block")
      yield* Deferred.await(busy)
      yield* actor.send("queued")
      const pendingSender = yield* Effect.fork(actor.send("pending"))
      yield* Effect.yieldNow()

      yield* actor.stop
      expect(log).toEqual(["acquire", "interrupted", "release"])
      expect(yield* actor.isAlive).toBe(false)
      expect(yield* Fiber.join(pendingSender).pipe(Effect.flip)).toEqual(
        new ActorStopped({ actor: "stoppable" })
      )
      expect(yield* failureOf(actor.send("late"))).toBeInstanceOf(ActorStopped)
      expect(yield* failureOf(actor.offer("late"))).toBeInstanceOf(ActorStopped)
      expect(yield* actor.mailboxSize).toBe(0)
      expect(yield* Effect.exit(actor.await)).toEqual(Exit.void)
      yield* actor.stop // idempotent
      expect(log).toEqual(["acquire", "interrupted", "release"])
    })
  )

  it.effect("closing the scope it was made in stops it", () =>
    Effect.gen(function* () {
      const log: Array<string> = []
      const greeted = yield* Deferred.make<void>()
      const actor = yield* Effect.scoped(
        Effect.gen(function* () {
          const actor = yield* Actor.make(
            Effect.as(
              Effect.acquireRelease(Effect.void, () => Effect.sync(() => log.push("release"))),
              (_: string) => Deferred.succeed(greeted, undefined)
            ),
            { name: "scoped", capacity: 1 }
          )
          yield* actor.send("hello")
          yield* Deferred.await(greeted)
          return actor
        })
      )
      expect(log).toEqual(["release"])
      expect(yield* failureOf(actor.send("after"))).toBeInstanceOf(ActorStopped)
      expect(yield* Effect.exit(actor.await)).toEqual(Exit.void)
    })
  )

  it.scoped("can be stopped even when made in an uninterruptible region", () =>
    Effect.gen(function* () {
      const busy = yield* Deferred.make<void>()
      const actor = yield* Effect.uninterruptible(
        Actor.make(
          Actor.receive((_: string) => Effect.zipRight(Deferred.succeed(busy, undefined), Effect.never)),
          { name: "made-uninterruptibly", capacity: 1 }
        )
      )
      yield* actor.send("block")
      yield* Deferred.await(busy)
      yield* actor.stop
      expect(yield* actor.isAlive).toBe(false)
    })
  )

  it.scoped("can stop itself from its handler; later messages are not handled", () =>
    Effect.gen(function* () {
      const handled: Array<string> = []
      const self = yield* Deferred.make<Actor.Actor<string>>()
      const actor = yield* Actor.make(
        Actor.receive((message: string) =>
          message === "stop"
            ? Effect.flatMap(Deferred.await(self), (me) => me.stop)
            : Effect.sync(() => handled.push(message))
        ),
        { name: "self-stopping", capacity: 4 }
      )
      yield* Deferred.succeed(self, actor)
      yield* Effect.forEach(["a", "stop", "b"], (m) => actor.send(m))
      expect(yield* Effect.exit(actor.await)).toEqual(Exit.void)
      expect(handled).toEqual(["a"])
      expect(yield* actor.isAlive).toBe(false)
    })
  )

  it.scoped("without supervision, a failure or a defect gives the actor up at once", () =>
    Effect.gen(function* () {
      for (const failing of [Effect.fail("boom"), Effect.die(new Error("bug"))]) {
        let released = false
        const actor = yield* Actor.make(
          Effect.as(
            Effect.acquireRelease(Effect.void, () => Effect.sync(() => (released = true))),
            (_: string) => failing
          ),
          { name: "fragile", capacity: 1 }
        )
        yield* actor.send("go")
        const error = yield* Effect.flip(actor.await)
        expect(error).toBeInstanceOf(ActorFailed)
        expect(error.restarts).toBe(0)
        expect(Cause.pretty(error.lastFailure)).toMatch(/boom|bug/)
        expect(released).toBe(true)
        expect(yield* failureOf(actor.send("again"))).toBeInstanceOf(ActorStopped)
      }
    })
  )

  it.scoped("refuses a mailbox capacity below 1", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Actor.make(
          Actor.receive((_: string) => Effect.void),
          { name: "x", capacity: 0 }
        )
      )
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
    })
  )
})
