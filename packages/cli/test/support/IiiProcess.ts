/**
 * Runs the `iii` command from its TypeScript sources in a process of its own, as a user's shell
 * would (no build needed): `node --experimental-transform-types --import scripts/ts-sources.mjs
 * packages/cli/src/bin.ts ARGS`.
 */
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

export const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url))
const bin = fileURLToPath(new URL("../../src/bin.ts", import.meta.url))
const loader = new URL("../../../../scripts/ts-sources.mjs", import.meta.url).href

/** The argv that runs `iii ARGS` from sources. */
export const iiiArgv = (args: ReadonlyArray<string>): Array<string> => [
  process.execPath,
  "--experimental-transform-types",
  "--no-warnings",
  "--import",
  loader,
  bin,
  ...args
]

export const spawnIii = (args: ReadonlyArray<string>, options: SpawnOptions = {}): ChildProcess => {
  const [node = process.execPath, ...rest] = iiiArgv(args)
  return spawn(node, rest, { stdio: ["ignore", "pipe", "pipe"], ...options })
}

export interface Finished {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs `iii ARGS` to its end (killed after `timeoutMs`). */
export const runIii = (
  args: ReadonlyArray<string>,
  options: SpawnOptions & { readonly timeoutMs?: number } = {}
): Promise<Finished> =>
  new Promise((resolve, reject) => {
    const child = spawnIii(args, options)
    let stdout = ""
    let stderr = ""
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString()
    })
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 20_000)
    child.on("error", reject)
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
