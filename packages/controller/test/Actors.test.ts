import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Ref, Schedule } from "effect"
import { KubeApiError } from "../src/Errors.js"
import * as Actors from "../src/internal/Actors.js"
import type { Outcome } from "../src/internal/Reconcile.js"

const options = (reconcile: (key: string) => Effect.Effect<Outcome, KubeApiError>): Actors.Options => ({
  backoff: { initial: Duration.millis(5), max: Duration.seconds(1) },
  retryRateLimit: { perSecond: 1000, burst: 100 },
  concurrency: 2,
  reconcile
})

const waitUntil = (check: Effect.Effect<boolean>) =>
  Effect.repeat(check, { until: (ok) => ok, schedule: Schedule.spaced("5 millis") }).pipe(
    Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("condition not reached") }),
    Effect.asVoid
  )

describe("Actors", () => {
  it("doubles the backoff from 5 ms up to the cap", () => {
    const delays = [1, 2, 3, 4, 30].map((n) =>
      Duration.toMillis(Actors.backoffDelay(n, Duration.millis(5), Duration.seconds(1)))
    )
    expect(delays).toEqual([5, 10, 20, 40, 1000])
  })

  it("makes retries wait when the global bucket is empty", () => {
    let now = 0
    const bucket = Actors.tokenBucket(10, 2, () => now)
    expect([bucket.take(), bucket.take()].map(Duration.toMillis)).toEqual([0, 0])
    expect(Duration.toMillis(bucket.take())).toBe(100)
    now = 1000
    expect(Duration.toMillis(bucket.take())).toBe(0)
  })

  it.scopedLive("retries a failing key until it succeeds, and stops the actor of a gone key", () =>
    Effect.gen(function* () {
      const calls = yield* Ref.make<ReadonlyArray<string>>([])
      const actors = yield* Actors.make(
        options((key) =>
          Ref.updateAndGet(calls, (c) => [...c, key]).pipe(
            Effect.flatMap((c) =>
              key === "flaky" && c.filter((k) => k === "flaky").length < 3
                ? Effect.fail(
                    new KubeApiError({
                      method: "PATCH",
                      path: "/x",
                      status: 409,
                      reason: "Conflict",
                      message: "conflict"
                    })
                  )
                : Effect.succeed<Outcome>(key === "gone" ? "gone" : "reconciled")
            )
          )
        )
      )
      actors.enqueue("flaky")
      actors.enqueue("gone")
      yield* waitUntil(Effect.map(Ref.get(calls), (c) => c.filter((k) => k === "flaky").length === 3))
      yield* waitUntil(Effect.map(actors.keys, (keys) => !keys.includes("gone")))
      expect(yield* actors.keys).toEqual(["flaky"])
    })
  )

  it.scopedLive("restarts the actor of a key whose reconcile dies, leaving other keys alone", () =>
    Effect.gen(function* () {
      const calls = yield* Ref.make<ReadonlyArray<string>>([])
      const actors = yield* Actors.make(
        options((key) =>
          Ref.updateAndGet(calls, (c) => [...c, key]).pipe(
            Effect.flatMap((c) =>
              key === "buggy" && c.filter((k) => k === "buggy").length === 1
                ? Effect.dieMessage("a bug in the reconciler")
                : Effect.succeed<Outcome>("reconciled")
            )
          )
        )
      )
      actors.enqueue("buggy")
      actors.enqueue("healthy")
      // The supervisor restarts the buggy actor and redelivers its message: a second call, which succeeds.
      yield* waitUntil(Effect.map(Ref.get(calls), (c) => c.filter((k) => k === "buggy").length === 2))
      expect((yield* Ref.get(calls)).filter((k) => k === "healthy")).toEqual(["healthy"])
      expect([...(yield* actors.keys)].sort()).toEqual(["buggy", "healthy"])
    })
  )
})
