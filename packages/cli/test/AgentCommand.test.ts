import { existsSync, mkdtempSync, readFileSync } from "node:fs"
import http from "node:http"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { NodeContext } from "@effect/platform-node"
import { EbpfCapture } from "@iii/agent"
import { WireProtocol } from "@iii/core"
import { Effect, Either, Exit } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { WebSocketServer } from "ws"
import * as CommandCgroup from "../../agent/src/internal/CommandCgroup.js"
import { writableCgroup2Mount } from "../../agent/test/support/Cgroup2.js"
import { run } from "../src/Cli.js"

/** Runs `iii agent …` in-process; returns the exit and the process exit code it set. */
const agent = async (...args: Array<string>) => {
  process.exitCode = undefined
  const exit = await Effect.runPromise(
    run(["node", "iii", "agent", ...args]).pipe(Effect.provide(NodeContext.layer), Effect.exit)
  )
  const code = process.exitCode
  process.exitCode = undefined
  return { exit, code }
}

/** An agent in proxy mode (no privileges needed) whose obs and app are unreachable ports. */
const proxyMode = [
  "--obs",
  "ws://127.0.0.1:9",
  "--service",
  "cli-test",
  "--mode",
  "proxy",
  "--proxy-listen",
  "127.0.0.1:0",
  "--proxy-upstream",
  "127.0.0.1:9"
]

const ebpf = Effect.runSync(EbpfCapture.isAvailable)
const cgroup2 = writableCgroup2Mount()
const propagationSkip = !ebpf.available
  ? `eBPF unavailable: ${ebpf.reasons.join("; ")}`
  : cgroup2 === undefined
    ? "no writable cgroup v2 mount"
    : undefined
if (propagationSkip !== undefined)
  console.warn(`iii agent --propagation -- COMMAND test skipped: ${propagationSkip}`)

const failure = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isFailure(exit) ? JSON.stringify(exit.cause) : "succeeded"

describe("iii agent", () => {
  afterEach(() => {
    process.exitCode = undefined
  })

  it("runs a command under the agent (proxy mode) and exits with its exit status", async () => {
    const { exit, code } = await agent(...proxyMode, "--", "sh", "-c", "exit 3")
    expect(Exit.isSuccess(exit)).toBe(true)
    expect(code).toBe(3)
  })

  it("reports a command killed by a signal as 128 + signal number", async () => {
    const { code } = await agent(...proxyMode, "--", "sh", "-c", "kill -TERM $$")
    expect(code).toBe(143)
  })

  it("passes signals it receives through to the command", async () => {
    const marker = join(mkdtempSync(join(tmpdir(), "iii-agent-cli-")), "started")
    const running = agent(
      ...proxyMode,
      "--",
      "sh",
      "-c",
      `trap 'exit 7' TERM; touch ${marker}; while :; do sleep 0.05; done`
    )
    // The command runs (so the agent's signal handlers are in place) once the marker exists.
    for (let i = 0; i < 1000 && !existsSync(marker); i++)
      await new Promise((resolve) => setTimeout(resolve, 10))
    expect(existsSync(marker)).toBe(true)
    process.kill(process.pid, "SIGTERM")
    const { exit, code } = await running
    expect(Exit.isSuccess(exit)).toBe(true)
    expect(code).toBe(7)
  })

  it.skipIf(propagationSkip !== undefined)(
    "--propagation -- COMMAND: the command's outbound requests carry a traceparent (real eBPF)",
    async () => {
      const received: Array<string | undefined> = []
      const server = http.createServer((req, res) => {
        received.push(req.headers.traceparent as string | undefined)
        res.end("ok")
      })
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
      const port = (server.address() as AddressInfo).port
      const call = `require("http").get({ host: "127.0.0.1", port: ${port}, agent: false }, (r) => r.resume())`
      try {
        const { exit, code } = await agent(
          "--obs",
          "ws://127.0.0.1:9",
          "--service",
          "a",
          "--mode",
          "ebpf",
          "--nice",
          "0",
          "--propagation",
          "--",
          process.execPath,
          "-e",
          call
        )
        expect(failure(exit)).toBe("succeeded")
        expect(code).toBe(0)
      } finally {
        server.close()
      }
      expect(received).toHaveLength(1)
      expect(received[0]).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
      // The agent (this process) removed the command's cgroup when it stopped.
      const own = CommandCgroup.cgroupV2Path(readFileSync("/proc/self/cgroup", "utf8")) ?? "/"
      expect(existsSync(join(cgroup2 ?? "", own, CommandCgroup.directoryName(process.pid)))).toBe(false)
    },
    60_000
  )

  it("refuses to start with nothing to trace, saying what to give", async () => {
    const { exit } = await agent("--obs", "ws://127.0.0.1:9", "--service", "cli-test")
    expect(failure(exit)).toContain("nothing to trace")
  })

  it("refuses proxy mode without its addresses, and malformed ones", async () => {
    const forced = await agent("--obs", "ws://127.0.0.1:9", "--service", "s", "--mode", "proxy", "--pid", "1")
    expect(failure(forced.exit)).toContain(
      "proxy mode needs --proxy-listen HOST:PORT and --proxy-upstream HOST:PORT"
    )
    const half = await agent("--obs", "ws://127.0.0.1:9", "--service", "s", "--proxy-listen", "127.0.0.1:1")
    expect(failure(half.exit)).toContain("needs both --proxy-listen and --proxy-upstream")
    const bad = await agent(
      "--obs",
      "ws://127.0.0.1:9",
      "--service",
      "s",
      "--proxy-listen",
      "localhost",
      "--proxy-upstream",
      "127.0.0.1:1"
    )
    expect(failure(bad.exit)).toContain('--proxy-listen: expected HOST:PORT, got \\"localhost\\"')
  })

  it("refuses a malformed pid", async () => {
    const { exit } = await agent("--obs", "ws://127.0.0.1:9", "--service", "s", "--pid", "12x")
    expect(failure(exit)).toContain('--pid: not a process id: \\"12x\\"')
  })

  it("refuses a nice value outside 0-19", async () => {
    const { exit } = await agent(...proxyMode, "--nice", "20", "--", "true")
    expect(failure(exit)).toContain("--nice: expected 0 to 19, got 20")
  })

  it("refuses an obs URL that is not ws:// or http://", async () => {
    const { exit } = await agent("--obs", "ftp://obs", "--service", "s", "--pid", "1")
    expect(failure(exit)).toContain("not a ws:// or http:// URL")
  })

  it("takes its identity and obs URL from the III_* environment the controller's sidecar gets", async () => {
    const obs = new WebSocketServer({ host: "127.0.0.1", port: 0 })
    await new Promise((resolve) => obs.once("listening", resolve))
    const hello = new Promise<WireProtocol.Frame>((resolve) =>
      obs.once("connection", (socket) =>
        socket.once("message", (data) => resolve(Either.getOrThrow(WireProtocol.decodeFrame(data as Buffer))))
      )
    )
    const env = {
      III_OBS_URL: `ws://127.0.0.1:${(obs.address() as { port: number }).port}`,
      III_SERVICE: "auth",
      III_COMPOSITION: "user-service",
      III_COMPONENT: "auth",
      III_POD_NAME: "user-service-auth-7d9f",
      III_NAMESPACE: "shop"
    }
    Object.assign(process.env, env)
    try {
      const { exit } = await agent(
        "--mode",
        "proxy",
        "--proxy-listen",
        "127.0.0.1:0",
        "--proxy-upstream",
        "127.0.0.1:9",
        "--",
        "sh",
        "-c",
        "sleep 1"
      )
      expect(failure(exit)).toBe("succeeded")
      expect(await hello).toMatchObject({
        type: "hello",
        agent: { service: "auth", pod: "user-service-auth-7d9f", namespace: "shop" }
      })
    } finally {
      for (const key of Object.keys(env)) delete process.env[key]
      obs.close()
    }
  })
})
