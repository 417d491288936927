import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

// `npm run test:e2e`: the end-to-end test on a real one-node cluster (e2e/), apart from `npm test`. Its
// set-up may build Kubernetes (~16 min the first time) and images, hence the long hook timeout.
// The suite's projects (vitest.config.ts) would replace this include: the e2e run has none.
const { projects: _suiteProjects, ...shared } = base.test ?? {}

export default defineConfig({
  ...base,
  test: {
    ...shared,
    include: ["e2e/**/*.e2e.test.ts"],
    testTimeout: 600_000,
    hookTimeout: 3_600_000
  }
})
