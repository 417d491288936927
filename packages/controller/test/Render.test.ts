import { readFileSync, writeFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { ServiceComposition } from "@iii/core"
import { Either } from "effect"
import { stringify } from "yaml"
import * as Render from "../src/Render.js"

const example = new URL("../../../manifests/examples/user-service.yaml", import.meta.url)
const golden = new URL("./fixtures/user-service.rendered.yaml", import.meta.url)

const decodeOne = (yaml: string) => {
  const [first] = ServiceComposition.fromYaml(yaml, "test")
  if (first === undefined || Either.isLeft(first)) throw new Error(`invalid: ${String(first?.left)}`)
  return first.right
}

const seed = () => decodeOne(readFileSync(example, "utf8"))

/** Multi-document YAML, the shape `iii render` prints. */
const toYaml = (objects: ReadonlyArray<unknown>) => objects.map((o) => stringify(o)).join("---\n")

describe("Render", () => {
  it("renders the seed example to the golden file (UPDATE_GOLDEN=1 rewrites it)", () => {
    const rendered = toYaml(Render.render({ ...seed(), metadata: { ...seed().metadata, namespace: "shop" } }))
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(golden, rendered)
    expect(rendered).toBe(readFileSync(golden, "utf8"))
  })
})
