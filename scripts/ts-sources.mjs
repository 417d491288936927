// Lets Node 24 run this repo's TypeScript sources directly in a child process or worker thread:
//
//   node --experimental-transform-types --import <repo>/scripts/ts-sources.mjs some.ts
//
// `@iii/<pkg>` resolves to packages/<pkg>/src/index.ts, and a NodeNext `./x.js` import from a .ts
// file to `./x.ts` when that file exists. Tests use it to run a node, a controller or a capture in a
// process of its own without a build; built code in dist/ needs none of it.
// (--experimental-transform-types, not plain type stripping: the agent's sources use parameter properties.)
import { existsSync } from "node:fs"
import { registerHooks } from "node:module"
import { fileURLToPath } from "node:url"

const packages = new URL("../packages/", import.meta.url)

registerHooks({
  resolve(specifier, context, nextResolve) {
    const pkg = /^@iii\/([a-z]+)$/.exec(specifier)?.[1]
    if (pkg !== undefined) {
      const entry = new URL(`${pkg}/src/index.ts`, packages)
      if (existsSync(fileURLToPath(entry))) return { url: entry.href, shortCircuit: true }
    }
    if (specifier.startsWith(".") && specifier.endsWith(".js") && context.parentURL?.endsWith(".ts")) {
      const source = new URL(`${specifier.slice(0, -3)}.ts`, context.parentURL)
      if (existsSync(fileURLToPath(source))) return { url: source.href, shortCircuit: true }
    }
    return nextResolve(specifier, context)
  }
})
