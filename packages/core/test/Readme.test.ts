import { describe, expect, it } from "@effect/vitest"
import {
  Actor,
  Crd,
  HashRing,
  LatencySketch,
  ServiceComposition,
  Supervisor,
  Telemetry,
  TraceContext,
  WireProtocol
} from "@iii/core"
import { Effect, Either, Option, Queue } from "effect"
import { untestedExamples } from "./fixtures/ReadmeExamples.js"

const readme = new URL("../README.md", import.meta.url)

describe("README", () => {
  it("ServiceComposition", () => {
    const result = ServiceComposition.validate({
      apiVersion: "iii.io/v1",
      kind: "ServiceComposition",
      metadata: { name: "shop" },
      spec: {
        components: [
          {
            name: "cart",
            image: "cart:v1",
            replicas: { min: 2, max: 8 },
            scalingPolicy: { metric: "p99_latency", threshold: "250ms" }
          },
          { name: "cart", image: "Cart:v2", replicas: { min: 5, max: 3 } }
        ]
      }
    })
    expect(result).toEqual(
      Either.left([
        {
          path: "spec.components[1].image",
          message: expect.stringContaining("is not a valid image reference")
        },
        { path: "spec.components[1].replicas", message: "min (5) is greater than max (3)" },
        {
          path: "spec.components[1].name",
          message: 'duplicate component name "cart" (also spec.components[0])'
        }
      ])
    )
  })

  it("CRD", () => {
    const crd = Crd.customResourceDefinition()
    expect(crd.metadata.name).toBe("servicecompositions.iii.io")
    expect(crd.spec.versions[0]?.schema.openAPIV3Schema.properties?.spec?.required).toEqual(["components"])
  })

  it("Telemetry model", () => {
    expect(Telemetry.statusClass(503)).toBe("5xx")
    expect(Telemetry.otelAttributeNames["http.route"]).toBe("http.route")
  })

  it("Trace context", () => {
    const incoming = TraceContext.extract({
      traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "x-iii-correlation-id": " order-4711 "
    })
    const server = TraceContext.serverContext(incoming)
    expect(server.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736")
    expect(server.parentSpanId).toEqual(Option.some("00f067aa0ba902b7"))
    expect(server.correlationId).toBe("order-4711")
    expect(TraceContext.parseTraceParent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")).toEqual(
      Option.none()
    )
  })

  it("Wire protocol", () => {
    const bytes = WireProtocol.encodeFrame({ type: "ack", seq: 41 })
    expect(Either.getOrThrow(WireProtocol.decodeFrame(bytes))).toEqual({ type: "ack", seq: 41 })
    const cut = WireProtocol.decodeFrame(bytes.subarray(0, 2))
    expect(Either.isLeft(cut) && WireProtocol.errorFrameFor(cut.left)).toMatchObject({
      type: "error",
      code: "truncated",
      fatal: true
    })
  })

  it("WireProtocol.BatchEncoder", () => {
    const encoder = new WireProtocol.BatchEncoder()
    encoder.addLog({ timeUnixNano: 1n, service: "cart", level: "warn", body: "slow" })
    expect(encoder.items).toBe(1)
    const frame = encoder.finish(7)
    expect(Either.getOrThrow(WireProtocol.decodeFrame(frame))).toMatchObject({
      type: "batch",
      seq: 7,
      logs: [{ body: "slow" }]
    })
    expect(encoder.items).toBe(0)
  })

  it("Hash ring", () => {
    const ring = HashRing.make(["obs-0", "obs-1", "obs-2"], { replication: 2 })
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
    const [primary, replica] = HashRing.owners(ring, traceId)
    expect(primary).toBe(HashRing.owner(ring, traceId))
    expect(replica).not.toBe(primary)
    // A new node takes keys only for itself: every other key keeps its owner.
    const grown = HashRing.add(ring, "obs-3")
    expect([primary, "obs-3"]).toContain(HashRing.owner(grown, traceId))
  })

  it("Latency sketch", () => {
    const sketch = LatencySketch.make()
    for (let ms = 1; ms <= 1000; ms++) sketch.add(ms)
    expect(Math.abs(sketch.quantile(0.99) / 990 - 1)).toBeLessThanOrEqual(0.01)
    expect(sketch.add(-5)).toBe(false) // negative, NaN and infinite values are refused
    sketch.merge(LatencySketch.fromValues([2000, 3000]))
    expect(sketch.count).toBe(1002)
    const data = sketch.toData() // Telemetry.SketchData: what the wire and the stores carry
    const copy = Either.getOrThrow(LatencySketch.fromData(data))
    expect(copy.quantile(1)).toBe(sketch.quantile(1))
  })

  it.scoped("Actors and supervision", () =>
    Effect.gen(function* () {
      const supervisor = yield* Supervisor.make<"reconcile">({
        restart: Supervisor.restartPolicy({
          base: "200 millis",
          cap: "1 minute",
          maxRestarts: 10,
          window: "10 minutes"
        }),
        onGiveUp: (key, error) => Effect.logError(`reconciler ${key} given up`, error)
      })
      const reconciled = yield* Queue.unbounded<string>()
      const reconcilerFor = (key: string) => Actor.receive((_: "reconcile") => Queue.offer(reconciled, key))
      // Informer callbacks only enqueue. With a 1-slot mailbox, a full mailbox means a run is already pending.
      const enqueue = (key: string) =>
        supervisor
          .spawn(key, reconcilerFor(key), { capacity: 1 })
          .pipe(Effect.flatMap((actor) => actor.offer("reconcile")))
      yield* enqueue("shop/cart")
      expect(yield* Queue.take(reconciled)).toBe("shop/cart")
      yield* supervisor.stop("shop/cart") // the composition was deleted: only its actor stops
      yield* supervisor.stopAll // leadership lost: every actor stops; the supervisor can spawn again later
    })
  )

  // The IiiTelemetry example is examples/effect-app/main.ts, which obs's IiiTelemetry.test.ts runs
  // against a real node.
  it("shows only examples that this file or the example app's test runs", () => {
    const effectApp = new URL("../../../examples/effect-app/main.ts", import.meta.url)
    expect(untestedExamples(readme, new URL(import.meta.url), effectApp)).toEqual([])
  })
})
