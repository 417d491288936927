import { describe, expect, it } from "@effect/vitest"
import { Crd, ServiceComposition, Telemetry, TraceContext, WireProtocol } from "@iii/core"
import { Either, Option } from "effect"
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

  it("shows only examples that this file runs", () => {
    expect(untestedExamples(readme, new URL(import.meta.url))).toEqual([])
  })
})
