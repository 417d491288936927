/**
 * `iii obs` as a process that cannot start: each start-up failure ends it within seconds with a
 * non-zero status and one line naming what is at fault, and it stays responsive to signals meanwhile.
 * Every process here is started under a SIGKILL deadline: an unfixed node ignored SIGTERM and spun.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { repoRoot, spawnIii } from "./support/IiiProcess.js"

const dir = mkdtempSync(join(tmpdir(), "iii-obs-start-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

interface Ended {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stderr: string
  readonly millis: number
}

/** Runs `iii obs ARGS` from the sources; SIGKILLed after `killAfterMs` whatever happens. */
const obs = (
  args: ReadonlyArray<string>,
  {
    killAfterMs = 20_000,
    signalAfterMs,
    env = {}
  }: { killAfterMs?: number; signalAfterMs?: number; env?: Record<string, string> } = {}
) =>
  new Promise<Ended>((resolve) => {
    const started = Date.now()
    const child = spawnIii(["obs", ...args], {
      env: {
        ...process.env,
        III_OBS_PORT: "0",
        III_OBS_HOST: "127.0.0.1",
        ...(env.III_OBS_TOKEN_FILE === undefined && { III_OBS_TOKEN: "t" }),
        ...env
      }
    })
    let stderr = ""
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString()
    })
    child.stdout?.on("data", (d: Buffer) => {
      stderr += d.toString()
    })
    const kill = setTimeout(() => child.kill("SIGKILL"), killAfterMs)
    const term =
      signalAfterMs === undefined ? undefined : setTimeout(() => child.kill("SIGTERM"), signalAfterMs)
    child.once("exit", (code, signal) => {
      clearTimeout(kill)
      if (term !== undefined) clearTimeout(term)
      resolve({ code, signal, stderr, millis: Date.now() - started })
    })
  })

/** The lines a failed start printed, less Node's own warnings. */
const lines = (ended: Ended) =>
  ended.stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0)

const expectOneLineFailure = (ended: Ended, ...mentions: ReadonlyArray<string>) => {
  expect(ended.signal, `ended by ${ended.signal}; output: ${ended.stderr}`).toBeNull()
  expect(ended.code).not.toBe(0)
  expect(ended.millis).toBeLessThan(15_000)
  expect(lines(ended), ended.stderr).toHaveLength(1)
  for (const m of mentions) expect(lines(ended)[0]).toContain(m)
}

describe("iii obs start-up failures", () => {
  it("a data directory that cannot be created (under /proc) ends the process with the directory and the cause", async () => {
    const data = `/proc/iii-obs-${process.pid}`
    expectOneLineFailure(await obs(["--data", data]), data, "ENOENT")
  })

  it("a data directory under a regular file, or one that is a file", async () => {
    const file = join(dir, "a-file")
    writeFileSync(file, "x")
    expectOneLineFailure(await obs(["--data", join(file, "data")]), join(file, "data"), "not a directory")
    expectOneLineFailure(await obs(["--data", file]), file, "not a directory")
  })

  it("a data directory written by another layout version", async () => {
    const data = join(dir, "old-layout")
    // A node that starts once makes the directory; the version is then changed behind its back.
    const first = await obs(["--data", data], { signalAfterMs: 4_000 })
    expect(first.signal ?? first.code).not.toBe("SIGKILL")
    execFileSync(
      process.execPath,
      [
        "-e",
        `import("lmdb").then(({ open }) => { const env = open({ path: ${JSON.stringify(data)} }); const meta = env.openDB({ name: "meta" }); meta.putSync("layout", 999); return env.close() })`
      ],
      { cwd: `${repoRoot}packages/obs` }
    )
    expectOneLineFailure(await obs(["--data", data]), data, "layout version 999")
  })

  it("a port in use", async () => {
    const taken = createServer()
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r))
    const address = taken.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    try {
      const ended = await obs(["--data", join(dir, "port"), "--port", String(port)])
      expectOneLineFailure(ended, `127.0.0.1:${port}`, "EADDRINUSE")
    } finally {
      taken.close()
    }
  })

  it("a token file that is a FIFO (a read would block forever) is refused at once", async () => {
    const fifo = join(dir, "token-fifo")
    execFileSync("mkfifo", [fifo])
    const env = { III_OBS_TOKEN_FILE: fifo }
    expectOneLineFailure(await obs(["--data", join(dir, "fifo")], { env }), fifo, "not a regular file")
  })

  it("SIGTERM during start-up ends the process", async () => {
    const ended = await obs(["--data", join(dir, "term")], { signalAfterMs: 300 })
    expect(ended.signal).not.toBe("SIGKILL")
    expect(ended.millis).toBeLessThan(15_000)
  })
})
