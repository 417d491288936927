/**
 * The cgroup v2 directory the agent makes for a command it starts itself (`iii agent --propagation
 * -- COMMAND`): trace propagation attaches to cgroups, and such a command shares the agent's.
 *
 * - Made under the agent's own cgroup (`/proc/self/cgroup`'s v2 line, in the cgroup2 mount), so the
 *   command stays under the limits it had: a child directory with no controllers of its own counts
 *   its processes against the agent's cgroup as before.
 * - The command is put in it before it runs (`enter`, while `TracedCommand`'s shell is held), so
 *   every socket it makes belongs to the directory: the kernel decides a socket's cgroup when the
 *   socket is created.
 * - Removed when the scope closes; processes that outlived the command (daemons it forked) are
 *   moved back to the agent's cgroup first, where they would have been without it.
 */
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as Errors from "@iii/core/Errors"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/** A process's cgroup v2 path in its `/proc/PID/cgroup` text (`0::/a/b` → `/a/b`), or undefined. Pure. */
export const cgroupV2Path = (procCgroup: string): string | undefined =>
  procCgroup
    .split("\n")
    .find((line) => line.startsWith("0::"))
    ?.slice(3)

/** The directory's name: one per agent process. */
export const directoryName = (agentPid: number): string => `iii-command-${agentPid}`

export type Made =
  | { readonly _tag: "Made"; readonly path: string }
  | { readonly _tag: "Unavailable"; readonly reason: string }

const codeOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error ? String(error.code) : undefined

const procs = (dir: string): ReadonlyArray<string> => {
  try {
    return readFileSync(join(dir, "cgroup.procs"), "utf8")
      .split("\n")
      .filter((pid) => pid !== "")
  } catch {
    return []
  }
}

/**
 * Removes the directory: an exited process can stay counted for a moment, and leftovers are moved
 * to `parent`, so a few tries (~1 s). Logs a warning naming the directory if it stays.
 */
const remove = (path: string, parent: string): Effect.Effect<void> =>
  Effect.gen(function* () {
    let last = ""
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        rmdirSync(path)
        return
      } catch (error) {
        if (codeOf(error) === "ENOENT") return
        last = Errors.messageOf(error)
        if (codeOf(error) !== "EBUSY") break
      }
      for (const pid of procs(path)) {
        try {
          writeFileSync(join(parent, "cgroup.procs"), pid)
        } catch {
          // Gone meanwhile.
        }
      }
      yield* Effect.sleep("20 millis")
    }
    yield* Effect.logWarning(`the command's cgroup ${path} could not be removed: ${last}`)
  })

/**
 * Makes the directory under the agent's cgroup in `mount` (`CgroupTree.findCgroup2Mount`); the
 * scope's close removes it. `Unavailable` (with
 * the reason) when this host has no writable cgroup v2 tree there.
 */
export const make = (
  mount: string | undefined,
  agentPid: number = process.pid
): Effect.Effect<Made, never, Scope.Scope> =>
  Effect.gen(function* () {
    if (mount === undefined) return { _tag: "Unavailable", reason: "no cgroup v2 mount" } as const
    let own: string | undefined
    try {
      own = cgroupV2Path(readFileSync(`/proc/${agentPid}/cgroup`, "utf8"))
    } catch (error) {
      return {
        _tag: "Unavailable",
        reason: `reading /proc/${agentPid}/cgroup: ${Errors.messageOf(error)}`
      } as const
    }
    if (own === undefined)
      return {
        _tag: "Unavailable",
        reason: `the agent is in no cgroup v2 (/proc/${agentPid}/cgroup)`
      } as const
    const parent = join(mount, own)
    const path = join(parent, directoryName(agentPid))
    const made = yield* Effect.acquireRelease(
      Effect.sync((): Made => {
        try {
          mkdirSync(path)
          return { _tag: "Made", path }
        } catch (error) {
          return { _tag: "Unavailable", reason: `cannot create ${path}: ${Errors.messageOf(error)}` }
        }
      }),
      (made) => (made._tag === "Made" ? remove(path, parent) : Effect.void)
    )
    return made
  })

/** Moves a process into the directory (its threads too); throws the kernel's refusal. */
export const enter = (path: string, pid: number): void => {
  writeFileSync(join(path, "cgroup.procs"), String(pid))
}
