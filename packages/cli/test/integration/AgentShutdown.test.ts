/**
 * Issue #17: `iii agent` stopped by SIGTERM delivers what it captured before it exits, within a
 * bounded time. The agent runs as its own process (real eBPF, root; skipped with the reason
 * otherwise), a server answers a burst of requests, and SIGTERM comes at once, long before the
 * capture's 100 ms poll or the exporter's 1 s batch seal would have sent anything.
 */
import { type ChildProcess, spawn } from "node:child_process"
import http from "node:http"
import type { AddressInfo } from "node:net"
import { fileURLToPath } from "node:url"
import { EbpfCapture } from "@iii/agent"
import { WireProtocol } from "@iii/core"
import { Effect, Either } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { WebSocketServer } from "ws"

const repo = (path: string) => fileURLToPath(new URL(`../../../../${path}`, import.meta.url))
const availability = Effect.runSync(EbpfCapture.isAvailable)
if (!availability.available) console.warn(`agent shutdown test skipped: ${availability.reasons.join("; ")}`)

describe.skipIf(!availability.available)("iii agent on SIGTERM", () => {
  const children: Array<ChildProcess> = []
  afterAll(() => {
    for (const child of children) child.kill("SIGKILL")
  })

  it("flushes every span it captured before exiting, within its shutdown bounds", async () => {
    // obs: acks every batch, counts the server's spans.
    let spans = 0
    const obs = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/v1/ingest" })
    await new Promise((resolve) => obs.once("listening", resolve))
    obs.on("connection", (socket) =>
      socket.on("message", (data: Buffer) => {
        const frame = WireProtocol.decodeFrame(data)
        if (Either.isLeft(frame)) return
        if (frame.right.type === "hello")
          socket.send(
            WireProtocol.encodeFrame({ type: "welcome", version: WireProtocol.PROTOCOL_VERSION, node: "t" })
          )
        if (frame.right.type === "batch") {
          // This process is the client too: its client spans (and the exporter's own connection) aside.
          spans += frame.right.spans.filter(
            (span) => span.kind === "server" && span.http?.path?.startsWith("/burst/") === true
          ).length
          socket.send(WireProtocol.encodeFrame({ type: "ack", seq: frame.right.seq }))
        }
      })
    )
    const server = http.createServer((_, res) => res.end("ok"))
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const port = (server.address() as AddressInfo).port
    // The server runs in this process: the agent traces it by pid (and ignores itself).
    const agent = spawn(
      process.execPath,
      [
        "--experimental-transform-types",
        "--no-warnings",
        "--import",
        repo("scripts/ts-sources.mjs"),
        repo("packages/cli/src/bin.ts"),
        "agent",
        "--obs",
        `ws://127.0.0.1:${(obs.address() as AddressInfo).port}`,
        "--service",
        "shutdown-test",
        "--pid",
        String(process.pid),
        "--mode",
        "ebpf"
      ],
      { stdio: ["ignore", "pipe", "pipe"] }
    )
    children.push(agent)
    let output = ""
    agent.stdout?.on("data", (chunk) => (output += chunk))
    agent.stderr?.on("data", (chunk) => (output += chunk))
    for (let i = 0; i < 3000 && !output.includes("tracing pids"); i++)
      await new Promise((resolve) => setTimeout(resolve, 10))
    expect(output).toContain("tracing pids")

    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 4 })
    const requests = 200
    await Promise.all(
      Array.from(
        { length: requests },
        (_, i) =>
          new Promise<void>((resolve, reject) =>
            http
              .get({ host: "127.0.0.1", port, path: `/burst/${i}`, agent: keepAlive }, (res) => {
                res.resume()
                res.on("end", resolve)
              })
              .on("error", reject)
          )
      )
    )
    const stopped = Date.now()
    agent.kill("SIGTERM")
    const code = await new Promise<number | null>((resolve) => agent.once("exit", resolve))
    const took = Date.now() - stopped
    keepAlive.destroy()
    server.close()
    obs.close()

    expect({ code, spans }).toEqual({ code: 0, spans: requests })
    // Bounded: the capture's drain (5 s at most) and the exporter's wait for acks (3 s at most).
    expect(took).toBeLessThan(8_000)
    expect(output).toMatch(/stopped: \d+ spans, .*requests not traced: 0 /)
  })
})
