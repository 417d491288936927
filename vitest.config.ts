import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url))

/** The test that installs a fresh clone as a newcomer would and times it: it runs alone, last. */
const freshClone = "packages/cli/test/integration/FreshClone.test.ts"

// Tests run against sources: @iii/* resolves to src/, so `npm test` needs no build first.
export default defineConfig({
  resolve: {
    alias: [
      // Before "@iii/core", which would also take the subpaths (`@iii/core/WireProtocol`: a module by
      // path, as the agent imports them; `@iii/core/IiiTelemetry`, which the index does not export).
      {
        find: /^@iii\/core\/(.+)$/,
        replacement: fileURLToPath(new URL("./packages/core/src/$1.ts", import.meta.url))
      },
      { find: "@iii/core", replacement: src("core") },
      { find: "@iii/obs", replacement: src("obs") },
      { find: "@iii/agent", replacement: src("agent") },
      { find: "@iii/controller", replacement: src("controller") }
    ]
  },
  test: {
    // `iii obs` listens for OTLP/gRPC on 4317 by default: test nodes, in parallel, must not share it
    // (a test wanting OTLP/gRPC gives a free port).
    env: { III_OBS_OTLP_GRPC_PORT: "0" },
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: "forks",
    reporters: ["default", "./vitest.summary.ts"],
    projects: [
      {
        extends: true,
        test: { name: "iii", include: ["packages/*/test/**/*.test.ts"], exclude: [freshClone] }
      },
      // A later group: on 2 cores, the suite compiling beside it would be timed too.
      { extends: true, test: { name: "fresh-clone", include: [freshClone], sequence: { groupOrder: 1 } } }
    ]
  }
})
