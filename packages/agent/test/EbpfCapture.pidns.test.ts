/**
 * `traceAllInPidNamespace`: the agent as a sidecar that shares its pod's pid namespace. A real new
 * pid namespace (`unshare --pid --fork --mount-proc`) holds a shell (pid 1, like a pod's pause
 * process), an HTTP server and the capture (test/fixtures/pidns-capture.ts, which prints what it
 * captured as JSON lines). The events must name processes by their pids in that namespace; a server
 * outside it, serving the same traffic, must produce nothing; a server that enters the namespace
 * later from outside (`nsenter`, as a restarted app container does) is traced from birth, with the
 * /proc rescan turned far down so that only the kernel's adoption can explain it. Needs root (real
 * eBPF, namespaces); skipped with the reason otherwise.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import http from "node:http"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as EbpfCapture from "../src/EbpfCapture.js"
import { listProcesses, parentPid, rescanChanges, targetsExcept } from "../src/internal/PidNamespace.js"

const availability = Effect.runSync(EbpfCapture.isAvailable)
const skipReason = !availability.available
  ? availability.reasons.join("; ")
  : process.getuid?.() !== 0
    ? "creating pid namespaces needs root"
    : spawnSync("unshare", ["--version"]).status !== 0 || spawnSync("nsenter", ["--version"]).status !== 0
      ? "unshare/nsenter (util-linux) are not installed"
      : undefined
if (skipReason !== undefined) console.warn(`EbpfCapture pid namespace test skipped: ${skipReason}`)

const fixtures = fileURLToPath(new URL("./fixtures/", import.meta.url))

interface Printed {
  readonly kind: string
  readonly pid?: number
  readonly tid?: number
  readonly fd?: number
  readonly direction?: string
  readonly payload?: string
  readonly localPort?: number
  readonly peerPort?: number
  readonly parentPid?: number
  readonly childPid?: number
}

interface Lines {
  readonly all: Array<string>
  /** The first line matching `pattern`, waiting up to ~20 s. */
  readonly wait: (pattern: RegExp) => Promise<RegExpExecArray>
}

const lines = (stream: NodeJS.ReadableStream | null, name: string): Lines => {
  const all: Array<string> = []
  if (stream !== null) createInterface({ input: stream }).on("line", (line) => all.push(line))
  const wait = async (pattern: RegExp) => {
    for (let attempt = 0; attempt < 1000; attempt++) {
      for (const line of all) {
        const match = pattern.exec(line)
        if (match !== null) return match
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    throw new Error(`${name} never printed ${pattern}; printed:\n${all.slice(0, 50).join("\n")}`)
  }
  return { all, wait }
}

const children: Array<ChildProcess> = []
afterEach(() => {
  for (const child of children.splice(0)) child.kill("SIGKILL")
})

const start = (command: string, args: ReadonlyArray<string>) => {
  const child = spawn(command, args, { cwd: fixtures, stdio: ["ignore", "pipe", "pipe"] })
  children.push(child)
  return { child, stdout: lines(child.stdout, command), stderr: lines(child.stderr, command) }
}

const get = (port: number, path: string) =>
  new Promise<string>((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path, agent: false }, (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => {
          body += chunk
        })
        res.on("end", () => resolve(body))
      })
      .on("error", reject)
  })

/** The host pid of the process whose innermost pid is `nsPid`, among the descendants of `ancestor`. */
const hostPidOf = (ancestor: number, nsPid: number): number | undefined => {
  const processes = listProcesses()
  const descends = (pid: number): boolean => {
    for (
      let current = processes.get(pid);
      current !== undefined && current > 0;
      current = processes.get(current)
    )
      if (current === ancestor) return true
    return false
  }
  for (const pid of processes.keys()) {
    if (!descends(pid)) continue
    try {
      const nspids = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]?.split(/\s+/)
      if (nspids !== undefined && nspids.length > 1 && Number(nspids.at(-1)) === nsPid) return pid
    } catch {
      // exited
    }
  }
  return undefined
}

describe("PidNamespace (pure parts)", () => {
  it("reads the parent pid from /proc/PID/stat, whatever the command name holds", () => {
    expect(parentPid("42 (node) S 7 42 42 0 -1")).toBe(7)
    expect(parentPid("42 (a) b) (c) R 1 42 42 0 -1")).toBe(1)
    expect(parentPid("garbage")).toBeUndefined()
  })

  it("targets every process but the given one and its descendants", () => {
    // 1: pause/init; 5 → 6 → 7: the agent's tree (6 is the agent); 10 → 11: the app; 20: joined later (ppid 0).
    const processes = new Map([
      [1, 0],
      [5, 0],
      [6, 5],
      [7, 6],
      [10, 1],
      [11, 10],
      [20, 0]
    ])
    expect([...targetsExcept(processes, 6)].sort((a, b) => a - b)).toEqual([1, 5, 10, 11, 20])
    expect([...targetsExcept(processes, 1)].sort((a, b) => a - b)).toEqual([5, 6, 7, 20])
  })

  it("re-adds every current target on a rescan, removes the vanished ones unless given explicitly", () => {
    expect(rescanChanges(new Set([1, 2, 3, 4]), new Set([1, 3, 5]), new Set([4]))).toEqual({
      add: [1, 3, 5],
      remove: [2]
    })
  })

  it("lists this process with its parent", () => {
    expect(listProcesses().get(process.pid)).toBe(process.ppid)
  })
})

describe("EbpfCapture in a pid namespace (real eBPF)", () => {
  it.skipIf(skipReason !== undefined)(
    "reports namespace-local pids, ignores processes outside the namespace, picks up processes that join it",
    async () => {
      const node = process.execPath
      const outside = start(node, ["pidns-server.mjs"])
      const outsidePort = Number((await outside.stderr.wait(/^listening (\d+) \d+$/))[1])

      const namespace = start("unshare", [
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "sh",
        "-c",
        '"$0" pidns-server.mjs & "$0" --experimental-transform-types --no-warnings --import ../../../../scripts/ts-sources.mjs pidns-capture.ts 3600000 & wait',
        node
      ])
      const [, insidePortText, insidePidText] = await namespace.stderr.wait(/^listening (\d+) (\d+)$/)
      const insidePort = Number(insidePortText)
      const insidePid = Number(insidePidText)
      const ready = await namespace.stdout.wait(/^(?:ready (\d+)|failed .*)$/)
      if (ready[1] === undefined) throw new Error(`the capture did not start: ${ready[0]}`)
      const capturePid = Number(ready[1])
      const events = (): Array<Printed> =>
        namespace.stdout.all
          .filter((line) => line.startsWith("event "))
          .map((line) => JSON.parse(line.slice(6)))
      const until = async <A>(what: string, find: (events: Array<Printed>) => A | undefined): Promise<A> => {
        for (let attempt = 0; attempt < 1000; attempt++) {
          const found = find(events())
          if (found !== undefined) return found
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
        throw new Error(`never saw ${what}; saw:\n${namespace.stdout.all.slice(0, 40).join("\n")}`)
      }

      // The same traffic outside the namespace first: by the time the inside traffic shows up, the
      // ring would have delivered anything the outside server caused.
      for (let i = 0; i < 3; i++)
        expect(await get(outsidePort, "/outside-traffic")).toBe("hello /outside-traffic")
      expect(await get(insidePort, "/inside-traffic")).toBe("hello /inside-traffic")
      const forked = await get(insidePort, "/fork")
      const childPid = Number(/^child (\d+)\n$/.exec(forked)?.[1])

      const accept = await until("the inside socket's open", (all) =>
        all.find((e) => e.kind === "open" && e.localPort === insidePort)
      )
      expect(accept).toMatchObject({ pid: insidePid, tid: insidePid })
      const request = await until("the inside request bytes", (all) =>
        all.find((e) => e.kind === "data" && e.payload?.startsWith("GET /inside-traffic ") === true)
      )
      expect(request).toMatchObject({ pid: insidePid, tid: insidePid, fd: accept.fd, direction: "ingress" })
      await until("the inside response bytes", (all) =>
        all.find(
          (e) => e.kind === "data" && e.pid === insidePid && e.payload?.includes("hello /inside-traffic")
        )
      )
      // Fork tracking in namespace numbers: the child's stdout write, before any rescan could add it.
      expect(await until("the fork", (all) => all.find((e) => e.kind === "fork"))).toEqual(
        expect.objectContaining({ parentPid: insidePid, childPid })
      )
      const childLine = await until("the child's stdout line", (all) =>
        all.find((e) => e.kind === "data" && e.fd === 1 && e.pid === childPid)
      )
      expect(childLine.payload).toBe(`child ${childPid}\n`)
      await until("the child's exit", (all) => all.find((e) => e.kind === "exit" && e.pid === childPid))

      // The numbers are the namespace's, not the kernel's.
      const insideHostPid = hostPidOf(namespace.child.pid ?? 0, insidePid)
      expect(insideHostPid).toBeDefined()
      expect(insideHostPid).not.toBe(insidePid)

      // Nothing from outside the namespace, nothing from the capture itself (its own stdout writes
      // would otherwise come back as events, endlessly).
      const all = events()
      expect(all.filter((e) => e.payload?.includes("outside-traffic") === true)).toEqual([])
      expect(all.filter((e) => e.localPort === outsidePort || e.peerPort === outsidePort)).toEqual([])
      expect(all.filter((e) => e.pid === capturePid || e.childPid === capturePid)).toEqual([])

      // A server entering the namespace from outside (its parent, nsenter, is not in it), after the
      // one rescan at start: the kernel adopts it at its fork, so its first request is captured.
      const shellHostPid = [...listProcesses()].find(([, ppid]) => ppid === namespace.child.pid)?.[0]
      expect(shellHostPid).toBeDefined()
      const late = start("nsenter", [
        "--target",
        String(shellHostPid),
        "--pid",
        "--",
        node,
        "pidns-server.mjs"
      ])
      const [, latePortText, latePidText] = await late.stderr.wait(/^listening (\d+) (\d+)$/)
      const latePort = Number(latePortText)
      const latePid = Number(latePidText)
      expect(hostPidOf(late.child.pid ?? 0, latePid)).not.toBe(latePid)
      expect(await get(latePort, "/late")).toBe("hello /late")
      const lateAccept = await until("the late server's socket open", (all) =>
        all.find((e) => e.kind === "open" && e.localPort === latePort)
      )
      expect(lateAccept).toMatchObject({ pid: latePid, tid: latePid })
      expect(events().find((e) => e.kind === "fork" && e.childPid === latePid)).toMatchObject({
        parentPid: 0
      })
      // The capture logs a warning when a rescan fails.
      expect(namespace.stdout.all.filter((line) => line.includes("failed"))).toEqual([])
    },
    60_000
  )
})
