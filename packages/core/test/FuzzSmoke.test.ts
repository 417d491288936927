/**
 * CI's smoke run of every fuzz target (fuzz/*.fuzz.mjs, Jazzer.js): a few seconds each from the
 * committed seeds, which must find nothing. Long runs are `npm run fuzz:<target>` (README, "Fuzzing").
 */
import { execFile, spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const repo = fileURLToPath(new URL("../../../", import.meta.url))
const seconds = 10

const runtime = spawnSync("bash", ["scripts/fuzz-runtime.sh"], { cwd: repo, encoding: "utf8" })
const unavailable =
  process.arch !== "x64"
    ? `Jazzer.js's native fuzzer is set up for x86_64 only (this is ${process.arch})`
    : runtime.status !== 0
      ? `the fuzzers' C runtime could not be installed: ${runtime.stderr.trim().split("\n").at(-1)}`
      : undefined
if (unavailable !== undefined) console.warn(`skipping the fuzz smoke runs: ${unavailable}`)

describe.skipIf(unavailable !== undefined)("fuzz targets, smoke runs", () => {
  for (const target of ["wire", "http", "params", "composition"])
    it(`fuzz:${target} runs ${seconds} s and finds nothing`, async () => {
      // Asynchronously: a worker blocked for half a minute misses vitest's RPC deadline.
      const run = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          ["scripts/fuzz.mjs", target, `-max_total_time=${seconds}`],
          { cwd: repo, encoding: "utf8", timeout: 120_000, maxBuffer: 64 * 1024 * 1024 },
          (error, stdout, stderr) =>
            resolve({
              status: error === null ? 0 : typeof error.code === "number" ? error.code : 1,
              stdout,
              stderr
            })
        )
      })
      const summary = run.stdout.trim().split("\n").at(-1) ?? ""
      console.log(summary)
      expect(run.status, run.stderr.slice(-2000)).toBe(0)
      expect(summary).toMatch(new RegExp(`^fuzz:${target}: [\\d,]+ executions .*findings: none$`))
    }, 150_000)
})
