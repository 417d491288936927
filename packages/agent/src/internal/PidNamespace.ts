/**
 * The processes of this process's pid namespace, read from /proc: what `EbpfCapture` traces with
 * `traceAllInPidNamespace` (an agent sidecar in a pod with shareProcessNamespace traces the app's
 * containers, not itself).
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs"

/** The pid namespace file whose numbering the capture uses for "own". */
export const ownNamespaceFile = "/proc/self/ns/pid"

/**
 * Parent pid from the text of /proc/PID/stat ("pid (comm) state ppid ..."); the command name may
 * hold spaces and parentheses, so fields are counted from its last ")". Pure.
 */
export const parentPid = (stat: string): number | undefined => {
  const end = stat.lastIndexOf(")")
  if (end < 0) return undefined
  const ppid = Number(stat.slice(end + 2).split(" ", 2)[1])
  return Number.isInteger(ppid) ? ppid : undefined
}

/** Every process in `procRoot` with its parent pid (processes that exit while read are left out). */
export const listProcesses = (procRoot = "/proc"): Map<number, number> => {
  const processes = new Map<number, number>()
  for (const name of readdirSync(procRoot)) {
    const pid = Number(name)
    if (!Number.isInteger(pid) || pid <= 0) continue
    try {
      const ppid = parentPid(readFileSync(`${procRoot}/${name}/stat`, "latin1"))
      if (ppid !== undefined) processes.set(pid, ppid)
    } catch {
      // Exited between readdir and read.
    }
  }
  return processes
}

/** `processes` (pid → parent pid) minus `self` and its descendants. Pure. */
export const targetsExcept = (processes: ReadonlyMap<number, number>, self: number): Set<number> => {
  const excluded = new Set([self])
  const targets = new Set<number>()
  const isExcluded = (pid: number): boolean => {
    // Walk up to a known answer; pid trees are shallow. The bound guards against a ppid loop
    // (impossible in the kernel, possible in a torn read of a recycled pid).
    const chain: Array<number> = []
    let current: number | undefined = pid
    for (let depth = 0; current !== undefined && current > 0 && depth < 4096; depth++) {
      if (excluded.has(current)) {
        for (const member of chain) excluded.add(member)
        return true
      }
      if (targets.has(current)) break
      chain.push(current)
      current = processes.get(current)
    }
    for (const member of chain) targets.add(member)
    return false
  }
  for (const pid of processes.keys()) isExcluded(pid)
  return targets
}

/**
 * One rescan's map changes: every current target is (re)added (idempotent; covers a pid reused
 * since the last scan), and pids added by the previous scan that are gone or now excluded are
 * removed, unless they were asked for explicitly. Pure.
 */
export const rescanChanges = (
  previous: ReadonlySet<number>,
  current: ReadonlySet<number>,
  explicit: ReadonlySet<number>
): { readonly add: ReadonlyArray<number>; readonly remove: ReadonlyArray<number> } => ({
  add: [...current],
  remove: [...previous].filter((pid) => !current.has(pid) && !explicit.has(pid))
})

/**
 * Fails unless the /proc mount lists this namespace's pids: the scan would otherwise name processes
 * in another numbering (e.g. `unshare --pid --fork` without `--mount-proc`).
 */
export const checkProcMatches = (procRoot = "/proc"): string | undefined => {
  let self: string
  try {
    self = readlinkSync(`${procRoot}/self`)
  } catch (error) {
    return `cannot read ${procRoot}/self: ${String(error)}`
  }
  return Number(self) === process.pid
    ? undefined
    : `${procRoot} belongs to another pid namespace (it calls this process ${self}, the process itself ${process.pid}): mount a /proc of this pid namespace`
}
