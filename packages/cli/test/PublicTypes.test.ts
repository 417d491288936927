/**
 * Every package's public declarations (its `dist/*.d.ts`, what `exports` offers, and everything they
 * import in turn) need only what a consumer installs with the package: its dependencies and peer
 * dependencies, with their types. A type of `ws` in a public signature would need `@types/ws`, a
 * development dependency only, so `ws` stays behind internal types.
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const repo = fileURLToPath(new URL("../../../", import.meta.url))
const packages = ["core", "obs", "agent", "controller", "cli"]

/** The bare specifiers a declaration file reaches through its relative imports, by the file naming each. */
const reached = (entries: ReadonlyArray<string>): Map<string, string> => {
  const seen = new Set<string>()
  const bare = new Map<string, string>()
  const walk = (file: string) => {
    if (seen.has(file)) return
    seen.add(file)
    for (const m of readFileSync(file, "utf8").matchAll(/(?:from |import\()"([^"]+)"/g)) {
      const spec = m[1] as string
      if (spec.startsWith(".")) {
        const next = resolve(dirname(file), spec.replace(/\.js$/, ".d.ts"))
        if (existsSync(next)) walk(next)
      } else if (!bare.has(spec)) bare.set(spec, file.slice(repo.length))
    }
  }
  for (const entry of entries) walk(entry)
  return bare
}

const packageOf = (spec: string) =>
  spec
    .split("/")
    .slice(0, spec.startsWith("@") ? 2 : 1)
    .join("/")

/** Whether an installed package ships declarations for a specifier (a `types` field, or `.d.ts` files beside its modules). */
const hasOwnTypes = (spec: string, from: string): boolean => {
  const pkg = packageOf(spec)
  const manifest = createRequire(join(from, "package.json")).resolve(`${pkg}/package.json`)
  const json = JSON.parse(readFileSync(manifest, "utf8")) as Record<string, unknown>
  const sub = spec.slice(pkg.length + 1).replace(/\.js$/, "")
  return (
    json.types !== undefined ||
    json.typings !== undefined ||
    JSON.stringify(json.exports ?? {}).includes('"types"') ||
    existsSync(join(dirname(manifest), sub === "" ? "index.d.ts" : `${sub}.d.ts`))
  )
}

describe("public type declarations", () => {
  execFileSync(
    process.execPath,
    [join(repo, "node_modules/typescript/bin/tsc"), "-b", join(repo, "packages/cli")],
    {
      stdio: "inherit"
    }
  )

  it.each(packages)("@iii/%s's need only its dependencies' types (no ws)", (name) => {
    const dir = join(repo, "packages", name)
    const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
      dependencies?: Record<string, string>
      peerDependencies?: Record<string, string>
    }
    const installed = { ...manifest.dependencies, ...manifest.peerDependencies }
    const entries = readdirSync(join(dir, "dist"))
      .filter((f) => f.endsWith(".d.ts"))
      .map((f) => join(dir, "dist", f))
    const problems = Array.from(reached(entries)).flatMap(([spec, file]) => {
      if (spec.startsWith("node:")) return []
      const pkg = packageOf(spec)
      if (!(pkg in installed)) return [`${file} imports ${spec}, not a dependency`]
      if (!hasOwnTypes(spec, dir) && !(`@types/${pkg}` in installed))
        return [`${file} imports ${spec}, whose types (@types/${pkg}) are not a dependency`]
      return []
    })
    expect(problems).toEqual([])
  })
})
