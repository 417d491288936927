import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url))

// Tests run against sources: @iii/* resolves to src/, so `npm test` needs no build first.
export default defineConfig({
  resolve: {
    alias: {
      "@iii/core": src("core"),
      "@iii/obs": src("obs"),
      "@iii/agent": src("agent"),
      "@iii/controller": src("controller")
    }
  },
  test: {
    include: ["packages/*/test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: "forks",
    reporters: ["default", "./vitest.summary.ts"]
  }
})
