/**
 * A newcomer's first minutes, for real: clone this repository's HEAD into a temporary directory, run
 * the README's first command exactly as written, and within 180 s see, in Chromium, the demo's
 * services with traffic, a trace waterfall of at least three spans across two services, and that
 * trace's logs. Then Ctrl-C, and everything stops.
 *
 * It uses the machine's caches as they are (npm's, cargo's, Node 24 in ~/.cache/iii), so the clone's
 * own work is the install, the build (the Rust addon compiles from scratch in the clone) and `iii up`.
 * Three things are pointed elsewhere without touching the command: the `iii` launcher
 * (III_BIN_DIR, a temporary directory put first on PATH), and `iii up`'s data and port (III_UP_DATA,
 * III_UP_PORT), so the user's own `iii` and `iii up` are left alone. The figure it prints is the
 * time from running the command to the last of those checks.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { cpus, loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { freePort } from "../../../core/test/fixtures/freePort.js"
import { artifacts, chromiumMissing, launch } from "../../../obs/test/support/Chromium.js"
import { repoRoot } from "../support/IiiProcess.js"

const budgetSeconds = 180
/** A 1-minute load average above this means the machine is busy with other work. */
const overloaded = 3 * cpus().length

/** The README's first command: the first command line of its "Two commands" block. */
export const firstCommand = (readme: string): string | undefined => {
  const section = readme.split("\n## ").find((s) => s.startsWith("Two commands"))
  const block = /```sh\n([\s\S]*?)```/.exec(section ?? "")?.[1] ?? ""
  return block.split("\n").find((line) => line.trim() !== "" && !line.trim().startsWith("#"))
}

const gitMissing = (() => {
  try {
    execFileSync("git", ["--version"], { stdio: "ignore" })
    return undefined
  } catch {
    return "git is not installed"
  }
})()
const skip = chromiumMissing ?? gitMissing
if (skip !== undefined) console.warn(`fresh-clone test skipped: ${skip}`)

describe.skipIf(skip !== undefined)("a fresh clone", () => {
  const work = mkdtempSync(join(tmpdir(), "iii-fresh-clone-"))
  let child: ChildProcess | undefined
  afterAll(() => {
    if (child?.pid !== undefined && child.exitCode === null) process.kill(-child.pid, "SIGKILL")
    rmSync(work, { recursive: true, force: true })
  })

  it(
    `runs the README's first command and shows the demo in the browser within ${budgetSeconds} s`,
    async () => {
      const clone = join(work, "iii")
      execFileSync("git", ["clone", "--quiet", repoRoot, clone])
      const command = firstCommand(readFileSync(join(clone, "README.md"), "utf8"))
      expect(command).toMatch(/iii up$/)
      const bin = join(work, "bin")
      mkdirSync(bin)
      const env = {
        ...process.env,
        PATH: `${bin}:${process.env.PATH ?? ""}`,
        III_BIN_DIR: bin,
        III_UP_DATA: join(work, "up"),
        III_UP_PORT: String(await freePort())
      }
      const loadAtStart = loadavg()[0] ?? 0
      const started = performance.now()
      const elapsed = () => (performance.now() - started) / 1000
      // Its own process group, so "Ctrl-C" reaches every process the command started, as in a terminal.
      child = spawn("bash", ["-c", command ?? ""], {
        cwd: clone,
        env,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout?.on("data", (d: Buffer) => {
        stdout += d.toString()
      })
      child.stderr?.on("data", (d: Buffer) => {
        stderr += d.toString()
      })
      const exited = new Promise<number | null>((resolve) => child?.on("close", resolve))

      let dashboard: string | undefined
      while (dashboard === undefined) {
        dashboard = /Dashboard: (http:\/\/127\.0\.0\.1:\d+\/#token=\S+)/.exec(stdout)?.[1]
        if (dashboard === undefined && child.exitCode !== null)
          throw new Error(`the first command ended (${child.exitCode}) before iii up:\n${stderr}\n${stdout}`)
        await new Promise((r) => setTimeout(r, 200))
      }
      const installed = elapsed()
      const shots = artifacts("fresh-clone")
      const browser = await launch()
      try {
        const page = browser.page
        await page.goto(dashboard)
        // The services page refreshes itself: wait until all three show traffic. Locators, not a
        // waitForFunction string: Playwright evaluates that with eval, which the dashboard's CSP forbids.
        for (const service of ["frontend", "catalog", "payments"])
          await page
            .locator(`tr[data-service="${service}"] [data-label="rate"]`, { hasText: /^[0-9.]+k?[/]s$/ })
            .waitFor({ timeout: 120_000 })
        await page.screenshot({ path: join(shots, "services.png"), fullPage: true })
        // A checkout: frontend → catalog and payments.
        await page.goto(new URL("/search?service=frontend&route=%2Fcheckout&since=15m", dashboard).href)
        await page
          .getByRole("link", { name: /frontend POST \/checkout/ })
          .first()
          .click()
        await page.waitForURL(/\/traces\/[0-9a-f]{32}$/)
        const rows = page.locator(".span-row")
        await rows.nth(2).waitFor()
        const services = new Set(await page.locator(".span-row .service").allTextContents())
        expect(await rows.count()).toBeGreaterThanOrEqual(3)
        expect(services.size).toBeGreaterThanOrEqual(2)
        const logs = page.getByRole("table", { name: "Logs of this trace" }).locator("tbody tr")
        await logs.first().waitFor({ timeout: 20_000 })
        expect(await logs.count()).toBeGreaterThanOrEqual(1)
        await page.screenshot({ path: join(shots, "trace.png"), fullPage: true })
      } finally {
        await browser.close()
      }
      const seen = elapsed()
      const load = loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")
      console.log(
        `fresh clone → dashboard with traffic, a 3+ span trace and its logs: ${seen.toFixed(1)} s (the command printed the dashboard at ${installed.toFixed(1)} s; load average ${load})`
      )
      console.log(
        stderr
          .split("\n")
          .filter((l) => /^install: .*\(\d+ s/.test(l))
          .join("\n")
      )
      expect(stdout).toMatch(/agent {5}(ebpf|proxy) mode:/)
      // Other work on the machine (2 cores shared by several builds) stretches every step: the time is
      // then printed, not judged.
      if (loadAtStart <= overloaded) expect(seen).toBeLessThanOrEqual(budgetSeconds)
      else
        console.warn(
          `time not judged: the load average was ${loadAtStart.toFixed(1)} at the start, over ${overloaded} on ${cpus().length} cores`
        )

      if (child.pid !== undefined) process.kill(-child.pid, "SIGINT")
      expect(await exited).toBe(0)
      expect(stdout).toMatch(/iii up: stopped\n$/)
    },
    15 * 60_000
  )
})
