/**
 * The cgroup v2 directory the agent makes for a command it starts (propagation): where it goes, why
 * it cannot be made, and its removal with processes that outlived the command (root and a writable
 * cgroup v2 mount; skipped with the reason otherwise).
 */
import { spawn } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { Effect, Exit, Scope } from "effect"
import { describe, expect, it } from "vitest"
import * as CommandCgroup from "../src/internal/CommandCgroup.js"
import { writableCgroup2Mount } from "./support/Cgroup2.js"

const writableMount = writableCgroup2Mount()
const skip = writableMount === undefined ? "no writable cgroup v2 mount" : undefined
if (skip !== undefined) console.warn(`CommandCgroup removal test skipped: ${skip}`)

const made = (mount: string | undefined) => Effect.runPromise(Effect.scoped(CommandCgroup.make(mount)))

describe("the command's cgroup", () => {
  it("reads the v2 line of /proc/PID/cgroup, on hybrids too", () => {
    expect(CommandCgroup.cgroupV2Path("0::/user.slice/session-1.scope\n")).toBe("/user.slice/session-1.scope")
    expect(CommandCgroup.cgroupV2Path("9:name=systemd:/a\n4:memory:/b\n0::/\n")).toBe("/")
    expect(CommandCgroup.cgroupV2Path("4:memory:/b\n1:cpu:/\n")).toBeUndefined()
    expect(CommandCgroup.directoryName(42)).toBe("iii-command-42")
  })

  it("says why it cannot be made: no cgroup v2 mount, a directory it cannot create", async () => {
    expect(await made(undefined)).toEqual({ _tag: "Unavailable", reason: "no cgroup v2 mount" })
    const missing = await made("/nonexistent-cgroup2")
    expect(missing._tag).toBe("Unavailable")
    expect(missing._tag === "Unavailable" && missing.reason).toMatch(
      /^cannot create \/nonexistent-cgroup2\/.*iii-command-\d+: ENOENT/
    )
  })

  it.skipIf(skip !== undefined)(
    "is made under the agent's cgroup, and removed at the close with its leftovers moved back",
    async () => {
      const own = CommandCgroup.cgroupV2Path(readFileSync("/proc/self/cgroup", "utf8")) ?? "/"
      const scope = Effect.runSync(Scope.make())
      const result = await Effect.runPromise(CommandCgroup.make(writableMount).pipe(Scope.extend(scope)))
      expect(result).toEqual({
        _tag: "Made",
        path: join(writableMount ?? "", own, `iii-command-${process.pid}`)
      })
      const path = result._tag === "Made" ? result.path : ""
      // A process the command left behind (a daemon it forked).
      const leftover = spawn("sleep", ["30"], { stdio: "ignore" })
      const exited = new Promise((resolve) => leftover.once("exit", resolve))
      try {
        CommandCgroup.enter(path, leftover.pid ?? 0)
        expect(readFileSync(join(path, "cgroup.procs"), "utf8").trim()).toBe(String(leftover.pid))
        await Effect.runPromise(Scope.close(scope, Exit.void))
        expect(existsSync(path)).toBe(false)
        expect(leftover.exitCode).toBeNull()
        expect(readFileSync(`/proc/${leftover.pid}/cgroup`, "utf8")).toContain(`0::${own}\n`)
      } finally {
        leftover.kill("SIGKILL")
        await exited
      }
    }
  )
})
