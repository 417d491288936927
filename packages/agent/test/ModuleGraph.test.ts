/**
 * What the agent process loads (README, "Memory"): the modules an embedding app or `iii agent`
 * imports at run time (`Agent`, `Exporter`, `Priority`), followed through their value imports
 * (relative ones and `@iii/core/<module>`), must not import effect's index (all 362 of its modules),
 * `effect/Schema` (which loads `fast-check`), `node:http` as an ES module (whose facade loads
 * Node's bundled undici) or `yaml` up front (only a kubeconfig needs it): each cost the node agent
 * megabytes of RSS.
 */
import { readFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const packages = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const entries = ["Agent", "Exporter", "Priority"].map((m) => join(packages, "agent/src", `${m}.ts`))

// `import`/`export … from "x"` and `import "x"`, with whether the statement is type-only.
const statement = /^(?:import|export)\s+(type\s+)?(?:[^;"']*?\s+from\s+)?["']([^"']+)["']/gm

/** Every value import reachable from `entries`: file → its external specifiers. */
const walk = () => {
  const seen = new Map<string, Array<string>>()
  const pending = [...entries]
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (seen.has(file)) continue
    const external: Array<string> = []
    seen.set(file, external)
    for (const [, typeOnly, specifier] of readFileSync(file, "utf8").matchAll(statement)) {
      if (typeOnly !== undefined || specifier === undefined) continue
      if (specifier.startsWith(".")) pending.push(resolve(dirname(file), specifier.replace(/\.js$/, ".ts")))
      else if (specifier.startsWith("@iii/core/"))
        pending.push(join(packages, "core/src", `${specifier.slice("@iii/core/".length)}.ts`))
      else external.push(specifier)
    }
  }
  return seen
}

describe("the agent's run-time modules", () => {
  it("import neither effect's index, effect/Schema, the @iii/core index, node:http nor yaml", () => {
    const graph = walk()
    expect(graph.size).toBeGreaterThan(20)
    expect([...graph.keys()].some((f) => f.endsWith("internal/Destination.ts"))).toBe(true)
    const forbidden = new Set([
      "effect",
      "effect/Schema",
      "effect/Arbitrary",
      "fast-check",
      "@iii/core",
      "node:http"
    ])
    const offending = [...graph].flatMap(([file, specifiers]) =>
      specifiers.filter((s) => forbidden.has(s)).map((s) => `${file.slice(packages.length + 1)}: ${s}`)
    )
    expect(offending).toEqual([])
  })
})
