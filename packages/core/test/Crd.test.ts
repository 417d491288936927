import { readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import * as Crd from "../src/Crd.js"

const committed = new URL("../../../manifests/crd/servicecomposition.yaml", import.meta.url)

/** Every schema node below the root, with its path. */
const walk = (props: Crd.JSONSchemaProps, path: string): Array<[string, Crd.JSONSchemaProps]> => [
  [path, props],
  ...Object.entries(props.properties ?? {}).flatMap(([name, child]) => walk(child, `${path}.${name}`)),
  ...(props.items ? walk(props.items, `${path}[]`) : []),
  ...(props.additionalProperties ? walk(props.additionalProperties, `${path}{}`) : [])
]

describe("Crd", () => {
  const nodes = walk(Crd.openApiSchema(), "")

  it("is structural: every node has a type", () => {
    expect(
      nodes.filter(([, p]) => p.type === undefined && !p["x-kubernetes-preserve-unknown-fields"])
    ).toEqual([])
  })

  it("describes every field but metadata (Kubernetes' own), so kubectl explain helps", () => {
    const undescribed = nodes
      .filter(([path, p]) => path !== ".metadata" && !path.endsWith("[]") && (p.description ?? "").length < 3)
      .map(([path]) => path)
    expect(undescribed).toEqual([])
  })

  it("leaves metadata to Kubernetes and turns named lists into maps", () => {
    const byPath = new Map(nodes)
    expect(byPath.get(".metadata")).toEqual({ type: "object" })
    expect(byPath.get(".spec.components")?.["x-kubernetes-list-map-keys"]).toEqual(["name"])
    expect(byPath.get(".status.conditions")?.["x-kubernetes-list-map-keys"]).toEqual(["type"])
    expect(byPath.get(".spec.components[].replicas")?.["x-kubernetes-validations"]).toEqual([
      { rule: "self.min <= self.max", message: "min is greater than max" }
    ])
  })

  it("has the status subresource, printer columns and a short name", () => {
    const crd = Crd.customResourceDefinition()
    const version = crd.spec.versions[0]
    expect(version?.subresources).toEqual({ status: {} })
    expect(version?.additionalPrinterColumns.map((c) => c.name)).toEqual([
      "Components",
      "Ready",
      "Status",
      "Age"
    ])
    expect(crd.spec.names.shortNames).toEqual(["svccomp"])
  })

  it("matches manifests/crd/servicecomposition.yaml (run `npm run crd:generate` when this fails)", () => {
    expect(readFileSync(committed, "utf8")).toBe(Crd.toYaml())
  })
})
