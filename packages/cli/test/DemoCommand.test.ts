import { existsSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, Schedule } from "effect"
import { vi } from "vitest"
import { demo } from "../src/DemoCommand.js"

const getJson = (url: string) =>
  Effect.tryPromise(async () => {
    const res = await fetch(url)
    if (!res.ok) throw new Error(`${url}: ${res.status}`)
    return (await res.json()) as Record<string, unknown>
  })

const eventually = <A>(effect: Effect.Effect<A, unknown>, check: (a: A) => boolean) =>
  effect.pipe(
    Effect.filterOrFail(check),
    Effect.retry(Schedule.spaced("200 millis").pipe(Schedule.upTo("20 seconds")))
  )

describe("iii demo", () => {
  it.live(
    "runs obs and a traced shop, prints where to look, and what it prints answers",
    () =>
      Effect.gen(function* () {
        const printed: Array<string> = []
        const spy = vi
          .spyOn(console, "log")
          .mockImplementation((line: unknown) => void printed.push(String(line)))
        yield* Effect.addFinalizer(() => Effect.sync(() => spy.mockRestore()))
        // Proxy mode needs no privileges, so the test runs anywhere; eBPF is the agent suite's job.
        const running = yield* Effect.fork(demo({ port: 0, mode: "proxy", duration: Option.none() }))
        const text = yield* eventually(
          Effect.sync(() => printed.join("\n")),
          (t) => t.includes("Where to look")
        )
        const obsUrl = /obs node\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(text)?.[1] ?? ""
        const dataDir = /LMDB in ([^)]+)\)/.exec(text)?.[1] ?? ""
        expect(obsUrl).not.toBe("")
        expect(existsSync(dataDir)).toBe(true)

        const services = yield* eventually(getJson(`${obsUrl}/v1/services`), (s) =>
          JSON.stringify(s).includes('"shop"')
        )
        expect(services).toMatchObject({ services: [{ service: "shop" }] })
        // The fifth request carries a correlation id: its trace (server + linked client span) and log.
        const correlated = yield* eventually(
          getJson(`${obsUrl}/v1/correlate/demo-order-5`),
          (c) => Array.isArray(c.logs) && c.logs.length > 0
        )
        const spans = (correlated.traces as Array<{ spans: Array<{ kind: string; name: string }> }>)[0]?.spans
        expect(spans?.map((s) => `${s.kind} ${s.name}`)).toEqual([
          "server GET /orders/{id}",
          "client GET /stock/sku-5"
        ])

        yield* Fiber.interrupt(running)
        expect(existsSync(dataDir)).toBe(false)
      }).pipe(Effect.scoped),
    60_000
  )
})
