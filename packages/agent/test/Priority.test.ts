import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { expect, it } from "vitest"

const repo = (path: string) => fileURLToPath(new URL(`../../../${path}`, import.meta.url))

// In a process of its own: lowering the priority of the test worker would slow the rest of the suite.
const niceOfEveryThread = (nice: number): Array<number> => {
  const script = `
    import { readdirSync, readFileSync } from "node:fs"
    import { Effect } from "effect"
    import * as Priority from "${repo("packages/agent/src/Priority.ts")}"
    const result = Effect.runSync(Priority.lower(${nice}))
    if (result.failures.length > 0) throw new Error(result.failures.join("; "))
    // Field 19 of /proc/<tid>/stat, counted after the ")" that ends the thread's name.
    const nices = readdirSync("/proc/self/task").map((tid) =>
      Number(readFileSync("/proc/self/task/" + tid + "/stat", "utf8").split(") ")[1].split(" ")[16]))
    console.log(JSON.stringify({ threads: result.threads, nices }))
  `
  const out = execFileSync(
    process.execPath,
    [
      "--experimental-transform-types",
      "--no-warnings",
      "--import",
      repo("scripts/ts-sources.mjs"),
      "--input-type=module",
      "-e",
      script
    ],
    { encoding: "utf8", cwd: repo("packages/agent") }
  )
  const { threads, nices } = JSON.parse(out) as { threads: number; nices: Array<number> }
  // Node runs several threads (V8's collector, libuv's pool) before any user code: all of them count.
  expect(threads).toBeGreaterThan(1)
  return nices
}

it("lowers every thread of the process, those Node started before it included", () => {
  const nices = niceOfEveryThread(7)
  expect(nices.length).toBeGreaterThan(1)
  expect(new Set(nices)).toEqual(new Set([7]))
})
