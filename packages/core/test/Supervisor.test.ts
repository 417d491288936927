import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Clock,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Option,
  Random,
  Scope,
  TestClock
} from "effect"
import * as Actor from "../src/Actor.js"
import { ActorFailed, ActorStopped, SupervisorClosed } from "../src/Errors.js"
import * as Supervisor from "../src/Supervisor.js"

const noJitter = (options: Supervisor.RestartPolicyOptions = {}) =>
  Supervisor.restartPolicy({
    base: "100 millis",
    factor: 2,
    cap: "1 second",
    jitter: 0,
    window: "1 hour",
    ...options
  })

/** A behavior that records the time of every (re)start, then fails to start. */
const failingStart = (
  starts: Array<number>,
  failure: Effect.Effect<never, string> = Effect.fail("cannot start")
) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    starts.push(now)
    return failure
  })

/** A behavior that records its (re)starts and whose handler fails on messages starting with "fail". */
const failingOn = (starts: Array<number>, handled: Array<string>) =>
  Effect.map(Clock.currentTimeMillis, (now) => {
    starts.push(now)
    return (message: string) =>
      Effect.suspend(() => {
        handled.push(message)
        return message.startsWith("fail") ? Effect.fail(`handler failed on ${message}`) : Effect.void
      })
  })

describe("Supervisor", () => {
  it("computes exponential, capped, jittered delays", () => {
    const policy = Supervisor.restartPolicy({ base: "100 millis", factor: 3, cap: "2 seconds", jitter: 0.5 })
    const millis = (attempt: number, r: number) => Duration.toMillis(Supervisor.backoff(policy, attempt, r))
    expect([0, 1, 2, 3, 4].map((attempt) => millis(attempt, 0))).toEqual([100, 300, 900, 2000, 2000])
    expect(millis(1, 0.5)).toBe(225)
    expect(millis(1, 0.999)).toBeGreaterThan(150)
    expect(() => Supervisor.restartPolicy({ jitter: 1.5 })).toThrow(RangeError)
    expect(() => Supervisor.restartPolicy({ factor: 0.5 })).toThrow(RangeError)
    expect(() => Supervisor.restartPolicy({ maxRestarts: -1 })).toThrow(RangeError)
  })

  it.scoped("restarts a failed actor after 100, 200, 400, 800 ms, then every second (the cap)", () =>
    Effect.gen(function* () {
      const starts: Array<number> = []
      const supervisor = yield* Supervisor.make<string>({ restart: noJitter({ maxRestarts: 100 }) })
      yield* supervisor.spawn("crashloop", failingStart(starts), { capacity: 1 })
      yield* TestClock.adjust("99 millis")
      expect(starts).toEqual([0])
      yield* TestClock.adjust("1 millis")
      expect(starts).toEqual([0, 100])
      yield* TestClock.adjust("4400 millis")
      expect(starts).toEqual([0, 100, 300, 700, 1500, 2500, 3500, 4500])
    })
  )

  it.scoped("draws jitter from the injected randomness", () =>
    Effect.gen(function* () {
      const starts: Array<number> = []
      const policy = noJitter({ jitter: 0.5, random: Effect.succeed(0.5), maxRestarts: 100 })
      const supervisor = yield* Supervisor.make<string>({ restart: policy })
      yield* supervisor.spawn("jittery", failingStart(starts), { capacity: 1 })
      yield* TestClock.adjust("1 second")
      // 0.75 of 100, 200, 400 ms
      expect(starts.slice(0, 4)).toEqual([0, 75, 225, 525])
    })
  )

  it.effect("draws jitter from Effect's Random by default, so withRandom makes it reproducible", () =>
    Effect.gen(function* () {
      const run = () =>
        Effect.gen(function* () {
          const starts: Array<number> = []
          const supervisor = yield* Supervisor.make<string>({
            restart: noJitter({ jitter: 1, maxRestarts: 100 })
          })
          yield* supervisor.spawn("seeded", failingStart(starts), { capacity: 1 })
          yield* TestClock.adjust("1 second")
          return starts
        }).pipe(Effect.scoped, Effect.withRandom(Random.make("seed")))
      const first = yield* run()
      expect(first.length).toBeGreaterThan(4) // full jitter shortens every delay
      expect(first.slice(1)).not.toEqual([100, 300, 700])
      yield* TestClock.setTime(0)
      expect(yield* run()).toEqual(first)
    })
  )

  it.scoped("restarts after defects too, releasing each incarnation's resources first", () =>
    Effect.gen(function* () {
      const log: Array<string> = []
      let incarnation = 0
      const supervisor = yield* Supervisor.make<string>({ restart: noJitter() })
      const actor = yield* supervisor.spawn(
        "buggy",
        Effect.gen(function* () {
          const n = ++incarnation
          yield* Effect.acquireRelease(
            Effect.sync(() => log.push(`acquire ${n}`)),
            () => Effect.sync(() => log.push(`release ${n}`))
          )
          return (message: string) =>
            message === "crash"
              ? Effect.die(new Error("bug"))
              : Effect.sync(() => log.push(`${n}: ${message}`))
        }),
        { capacity: 4, redeliver: false }
      )
      yield* actor.send("crash")
      yield* TestClock.adjust("100 millis")
      yield* actor.send("hello")
      yield* TestClock.adjust("1 millis")
      expect(log).toEqual(["acquire 1", "release 1", "acquire 2", "2: hello"])
    })
  )

  it.scoped("gives up when the budget is exhausted, reports it, and drops the actor", () =>
    Effect.gen(function* () {
      const starts: Array<number> = []
      const gaveUp = yield* Deferred.make<readonly [string, ActorFailed]>()
      const supervisor = yield* Supervisor.make<string>({
        restart: noJitter({ maxRestarts: 3, window: "10 seconds" }),
        onGiveUp: (key, error) => Deferred.succeed(gaveUp, [key, error] as const)
      })
      const actor = yield* supervisor.spawn("doomed", failingStart(starts, Effect.die("broken")), {
        capacity: 1
      })
      yield* TestClock.adjust("1 second")
      const [key, error] = yield* Deferred.await(gaveUp)
      expect(key).toBe("doomed")
      expect(error.restarts).toBe(3)
      expect(Cause.isDie(error.lastFailure)).toBe(true)
      expect(starts).toEqual([0, 100, 300, 700])
      expect(yield* Effect.flip(actor.await)).toBe(error)
      expect(yield* Effect.flip(actor.send("anyone?"))).toBeInstanceOf(ActorStopped)
      expect(yield* supervisor.get("doomed")).toEqual(Option.none())
      expect(yield* supervisor.keys).toEqual([])
      // The controller may start it afresh later, e.g. on the next change of its resource.
      const again = yield* supervisor.spawn(
        "doomed",
        Actor.receive((_: string) => Effect.void),
        { capacity: 1 }
      )
      expect(again).not.toBe(actor)
      expect(yield* supervisor.keys).toEqual(["doomed"])
    })
  )

  it.scoped("counts only restarts within the sliding window against the budget", () =>
    Effect.gen(function* () {
      const starts: Array<number> = []
      const handled: Array<string> = []
      const supervisor = yield* Supervisor.make<string>({
        restart: noJitter({ maxRestarts: 1, window: "10 seconds" })
      })
      const actor = yield* supervisor.spawn("occasional", failingOn(starts, handled), {
        capacity: 4,
        redeliver: false
      })
      for (let i = 0; i < 3; i++) {
        yield* actor.send(`fail ${i}`)
        yield* TestClock.adjust("20 seconds")
      }
      expect(starts).toEqual([0, 100, 20_100, 40_100])
      expect(yield* actor.isAlive).toBe(true)
      // Two failures within 10 s exceed a budget of 1.
      yield* actor.send("fail again")
      yield* actor.send("fail once more")
      yield* TestClock.adjust("1 second")
      expect(yield* Effect.flip(actor.await)).toBeInstanceOf(ActorFailed)
    })
  )

  it.scoped("resets the backoff once an incarnation handles a message", () =>
    Effect.gen(function* () {
      const starts: Array<number> = []
      const handled: Array<string> = []
      const supervisor = yield* Supervisor.make<string>({ restart: noJitter() })
      const actor = yield* supervisor.spawn("flaky", failingOn(starts, handled), {
        capacity: 4,
        redeliver: false
      })
      yield* actor.send("fail 1") // restart after 100 ms
      yield* TestClock.adjust("100 millis")
      yield* actor.send("fail 2") // consecutive: after 200 ms
      yield* TestClock.adjust("200 millis")
      yield* actor.send("ok")
      yield* actor.send("fail 3") // a success came between: after 100 ms again
      yield* TestClock.adjust("100 millis")
      expect(starts).toEqual([0, 100, 300, 400])
    })
  )

  it.scoped("keeps queued messages across a restart and handles the failed one again first", () =>
    Effect.gen(function* () {
      for (const redeliver of [true, false]) {
        const handled: Array<string> = []
        let failedOnce = false
        const supervisor = yield* Supervisor.make<string>({ restart: noJitter() })
        const actor = yield* supervisor.spawn(
          `redeliver-${redeliver}`,
          Actor.receive((message: string) =>
            Effect.suspend(() => {
              handled.push(message)
              if (message === "a" && !failedOnce) {
                failedOnce = true
                return Effect.fail("transient")
              }
              return Effect.void
            })
          ),
          { capacity: 4, redeliver }
        )
        yield* Effect.forEach(["a", "b", "c"], (m) => actor.send(m))
        yield* TestClock.adjust("1 second")
        expect(handled).toEqual(redeliver ? ["a", "a", "b", "c"] : ["a", "b", "c"])
      }
    })
  )

  it.scoped("stops one actor without touching the others", () =>
    Effect.gen(function* () {
      const log: Array<string> = []
      const supervisor = yield* Supervisor.make<string>()
      const behavior = (key: string) =>
        Effect.as(
          Effect.acquireRelease(Effect.void, () => Effect.sync(() => log.push(`release ${key}`))),
          (message: string) => Effect.sync(() => log.push(`${key}: ${message}`))
        )
      const a = yield* supervisor.spawn("default/a", behavior("a"), { capacity: 1 })
      const b = yield* supervisor.spawn("default/b", behavior("b"), { capacity: 1 })
      expect(yield* supervisor.spawn("default/a", behavior("other"), { capacity: 1 })).toBe(a)
      yield* a.send("one")
      yield* b.send("one")
      yield* TestClock.adjust("1 millis")
      yield* supervisor.stop("default/a")
      expect(log).toContain("release a")
      expect(log).not.toContain("release b")
      expect(yield* Effect.flip(a.send("two"))).toBeInstanceOf(ActorStopped)
      yield* b.send("two")
      yield* TestClock.adjust("1 millis")
      expect(log).toContain("b: two")
      expect(yield* supervisor.keys).toEqual(["default/b"])
      yield* supervisor.stop("default/missing") // no-op
    })
  )

  it.scoped("a slow stop does not hold up spawning other actors", () =>
    Effect.gen(function* () {
      const releasing = yield* Deferred.make<void>()
      const finishRelease = yield* Deferred.make<void>()
      const supervisor = yield* Supervisor.make<string>()
      const slow = Effect.as(
        Effect.acquireRelease(Effect.void, () =>
          Deferred.succeed(releasing, undefined).pipe(Effect.zipRight(Deferred.await(finishRelease)))
        ),
        (_: string) => Effect.void
      )
      const a = yield* supervisor.spawn("slow", slow, { capacity: 1 })
      yield* a.send("start")
      yield* TestClock.adjust("1 millis")
      const stopping = yield* Effect.fork(supervisor.stop("slow"))
      yield* Deferred.await(releasing)
      const b = yield* supervisor.spawn(
        "other",
        Actor.receive((_: string) => Effect.void),
        { capacity: 1 }
      )
      expect(yield* b.isAlive).toBe(true)
      expect(yield* supervisor.keys).toEqual(["other"])
      yield* Deferred.succeed(finishRelease, undefined)
      yield* Fiber.join(stopping)
      expect(yield* a.isAlive).toBe(false)
    })
  )

  it.scoped("stopAll stops every actor (lost leadership) and the supervisor stays usable", () =>
    Effect.gen(function* () {
      const released: Array<string> = []
      const supervisor = yield* Supervisor.make<string>()
      const behavior = (key: string) =>
        Effect.as(
          Effect.acquireRelease(Effect.void, () => Effect.sync(() => released.push(key))),
          (_: string) => Effect.void
        )
      const actors = yield* Effect.forEach(["x", "y", "z"], (key) =>
        Effect.tap(supervisor.spawn(key, behavior(key), { capacity: 1 }), (actor) => actor.send("start"))
      )
      yield* TestClock.adjust("1 millis")
      yield* supervisor.stopAll
      expect([...released].sort()).toEqual(["x", "y", "z"])
      expect(yield* supervisor.keys).toEqual([])
      for (const actor of actors) expect(yield* actor.isAlive).toBe(false)
      yield* supervisor.spawn("x", behavior("x"), { capacity: 1 })
      expect(yield* supervisor.keys).toEqual(["x"])
    })
  )

  it.effect("closing its scope stops every actor; afterwards spawn fails with SupervisorClosed", () =>
    Effect.gen(function* () {
      const released: Array<string> = []
      const scope = yield* Scope.make()
      const supervisor = yield* Supervisor.make<string>().pipe(Scope.extend(scope))
      const behavior = (key: string) =>
        Effect.as(
          Effect.acquireRelease(Effect.void, () => Effect.sync(() => released.push(key))),
          (_: string) => Effect.void
        )
      const actor = yield* supervisor.spawn("p", behavior("p"), { capacity: 1 })
      yield* supervisor.spawn("q", behavior("q"), { capacity: 1 })
      yield* actor.send("start")
      yield* TestClock.adjust("1 millis")
      yield* Scope.close(scope, Exit.void)
      expect(released).toContain("p")
      expect(yield* actor.isAlive).toBe(false)
      expect(yield* Effect.flip(supervisor.spawn("r", behavior("r"), { capacity: 1 }))).toEqual(
        new SupervisorClosed({ actor: "r" })
      )
    })
  )
})
