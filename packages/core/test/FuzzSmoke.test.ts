/**
 * CI's smoke run of every fuzz target (fuzz/*.fuzz.mjs, Jazzer.js): a few seconds each from the
 * committed seeds, which must find nothing. Long runs are `npm run fuzz:<target>` (README, "Fuzzing").
 */
import { execFile, spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const repo = fileURLToPath(new URL("../../../", import.meta.url))
const seconds = 10

const runtime = spawnSync("bash", ["scripts/fuzz-runtime.sh", process.execPath], {
  cwd: repo,
  encoding: "utf8"
})
const unavailable =
  process.arch !== "x64"
    ? `Jazzer.js's native fuzzer is set up for x86_64 only (this is ${process.arch})`
    : runtime.status !== 0
      ? `the fuzzers' C runtime could not be installed: ${runtime.stderr.trim().split("\n").at(-1)}`
      : undefined
if (unavailable !== undefined) console.warn(`skipping the fuzz smoke runs: ${unavailable}`)

// Asynchronously: a worker blocked for half a minute misses vitest's RPC deadline.
const fuzz = (target: string, ...options: ReadonlyArray<string>) =>
  new Promise<{ status: number; summary: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ["scripts/fuzz.mjs", target, ...options],
      { cwd: repo, encoding: "utf8", timeout: 120_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const summary = stdout.trim().split("\n").at(-1) ?? ""
        console.log(summary)
        resolve({
          status: error === null ? 0 : typeof error.code === "number" ? error.code : 1,
          summary,
          stderr
        })
      }
    )
  })

describe.skipIf(unavailable !== undefined)("fuzz targets, smoke runs", () => {
  for (const target of ["wire", "http", "params", "composition"])
    it(`fuzz:${target} runs ${seconds} s and finds nothing`, async () => {
      const run = await fuzz(target, `-max_total_time=${seconds}`)
      expect(run.status, run.stderr.slice(-2000)).toBe(0)
      expect(run.summary).toMatch(new RegExp(`^fuzz:${target}: [\\d,]+ executions .*findings: none$`))
    }, 150_000)

  // Fork mode starts its jobs again through a shell: they must come up under the fuzzers' runtime.
  it("runs in fork mode, its jobs' executions counted", async () => {
    const run = await fuzz("params", "-fork=2", `-max_total_time=${seconds}`)
    expect(run.status, run.stderr.slice(-2000)).toBe(0)
    expect(run.stderr).toContain("-fork=2: fuzzing in separate process")
    expect(
      Number(/^fuzz:params: ([\d,]+) executions/.exec(run.summary)?.[1]?.replaceAll(",", ""))
    ).toBeGreaterThan(0)
  }, 150_000)
})
