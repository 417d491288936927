import { readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Render } from "@iii/controller"
import { Either } from "effect"
import { parseAllDocuments } from "yaml"
import { renderYaml } from "../src/RenderCommand.js"

const seed = readFileSync(new URL("../../../manifests/examples/user-service.yaml", import.meta.url), "utf8")

describe("iii render", () => {
  it("prints every object of the seed example as YAML documents, in the given namespace", () => {
    const out = renderYaml(seed, "user-service.yaml", Render.defaultRenderSettings, "shop")
    const docs = Either.getOrThrow(out)
      .split(/^---$/m)
      .flatMap((text) =>
        parseAllDocuments(text).map(
          (d) => d.toJS() as { kind: string; metadata: { name: string; namespace: string } }
        )
      )
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual([
      "Deployment/user-service-auth",
      "Service/user-service-auth",
      "HorizontalPodAutoscaler/user-service-auth",
      "Deployment/user-service-profile",
      "Service/user-service-profile"
    ])
    expect(new Set(docs.map((d) => d.metadata.namespace))).toEqual(new Set(["shop"]))
  })

  it("prints every problem instead, schema and semantic ones alike", () => {
    const bad = `
apiVersion: iii.io/v1
kind: ServiceComposition
metadata: { name: shop }
spec:
  components:
    - { name: a, image: a:1, replicas: { min: 5, max: 3 } }
    - { name: b, image: b:1, replicas: { min: 1, max: 3 }, scalingPolicy: { metric: cpu, threshold: 80% } }
`
    const out = renderYaml(bad, "bad.yaml", Render.defaultRenderSettings)
    expect(Either.isLeft(out) && out.left).toEqual([
      "bad.yaml: spec.components[0].replicas: min (5) is greater than max (3)"
    ])
    const semantic = renderYaml(
      bad.replace("min: 5, max: 3", "min: 1, max: 3"),
      "bad.yaml",
      Render.defaultRenderSettings
    )
    expect(Either.isLeft(semantic) && semantic.left).toEqual([
      "bad.yaml: shop: spec.components[1].resources.requests.cpu: scaling on cpu needs a cpu request (utilisation is measured against it)"
    ])
  })
})
