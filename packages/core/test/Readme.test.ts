import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { Crd, ServiceComposition, Telemetry } from "@iii/core"
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
          { name: "cart", image: "cart:v1", replicas: { min: 2, max: 8 },
            scalingPolicy: { metric: "p99_latency", threshold: "250ms" } },
          { name: "cart", image: "Cart:v2", replicas: { min: 5, max: 3 } }
        ]
      }
    })
    expect(result).toEqual(Either.left([
      { path: "spec.components[1].image", message: expect.stringContaining("is not a valid image reference") },
      { path: "spec.components[1].replicas", message: "min (5) is greater than max (3)" },
      { path: "spec.components[1].name", message: 'duplicate component name "cart" (also spec.components[0])' }
    ]))
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

  it("shows only examples that this file runs", () => {
    expect(untestedExamples(readme, new URL(import.meta.url))).toEqual([])
  })
})
