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

const shellQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`

export interface Terminal {
  /** Everything the command wrote to the terminal so far (ANSI sequences included). */
  readonly output: () => string
  /** Types into the terminal (e.g. "\x03" for Ctrl-C). */
  readonly type: (text: string) => void
  readonly exited: Promise<number | null>
  readonly kill: () => void
}

/**
 * Runs `iii ARGS` on a real pseudo-terminal (util-linux `script`), `columns` wide, as a user's
 * terminal would: stdout is a TTY, Ctrl-C is typed, not signalled.
 */
export const iiiOnTerminal = (
  args: ReadonlyArray<string>,
  options: { columns?: number; env?: NodeJS.ProcessEnv } = {}
): Terminal => {
  const command = `stty cols ${options.columns ?? 120} rows 40; exec ${iiiArgv(args).map(shellQuote).join(" ")}`
  const child = spawn("script", ["-qfec", command, "/dev/null"], {
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, ...options.env, TERM: "xterm-256color" }
  })
  let output = ""
  child.stdout?.on("data", (d: Buffer) => {
    output += d.toString()
  })
  child.stderr?.on("data", (d: Buffer) => {
    output += d.toString()
  })
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)))
  return {
    output: () => output,
    type: (text) => child.stdin?.write(text),
    exited,
    kill: () => child.kill("SIGKILL")
  }
}

/** The text without ANSI escape sequences. */
const escapeSequence = new RegExp(`${"\u001b"}\\[[0-9;?]*[A-Za-z]`, "g")
export const plain = (text: string): string => text.replace(escapeSequence, "").replaceAll("\r", "")
