/**
 * Issue #17: every request the traced service answered is a span or a counted drop. A hello-world
 * server is driven at saturation while the agent captures it through a kernel ring far too small
 * for the load, so records are lost; the agent must still account for every request, each drop
 * with its reason. Real eBPF (root, addon built; skipped with the reason otherwise), a real
 * WebSocket to a fake obs.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { Effect, Exit, Layer, Scope } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Agent from "../../src/Agent.js"
import * as EbpfCapture from "../../src/EbpfCapture.js"
import * as Exporter from "../../src/Exporter.js"
import { FakeObs } from "../support/FakeObs.js"

const availability = Effect.runSync(EbpfCapture.isAvailable)
if (!availability.available) console.warn(`accounting test skipped: ${availability.reasons.join("; ")}`)

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))

/** A child process and the stdout lines it printed so far. */
const start = (args: ReadonlyArray<string>) => {
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] })
  const lines: Array<string> = []
  createInterface({ input: child.stdout }).on("line", (line) => lines.push(line))
  const line = async (prefix: string, after = 0): Promise<string> => {
    for (let i = 0; i < 3000; i++) {
      const found = lines.slice(after).find((l) => l.startsWith(prefix))
      if (found !== undefined) return found.slice(prefix.length)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    throw new Error(`${args.join(" ")} never printed "${prefix}"`)
  }
  return { child, lines, line }
}

const children: Array<ChildProcess> = []
afterEach(() => {
  for (const child of children.splice(0)) child.kill("SIGKILL")
})

describe("agent accounting (real eBPF)", () => {
  it.skipIf(!availability.available)(
    "at saturation with a small kernel ring: spans + counted drops = requests answered",
    async () => {
      const server = start([fixture("counting-server.mjs")])
      children.push(server.child)
      const port = Number(await server.line("listening "))
      const obs = new FakeObs()
      const url = await obs.start()
      const scope = Effect.runSync(Scope.make())
      const agentLayer = Agent.layer({
        identity: { service: "counted" },
        mode: "ebpf",
        pids: [server.child.pid ?? 0],
        // 16 KiB of ring (~100 records) and 2 small batch buffers: the load overflows them.
        capture: { ringBufferBytes: 16 * 1024, batchBuffers: 2, batchBytes: 64 * 1024 },
        statsIntervalMs: 3_600_000
      }).pipe(
        Layer.provide(
          Exporter.layer({ urls: [url], agent: { id: Exporter.newAgentId(), service: "counted" } })
        )
      )
      const context = await Effect.runPromise(Layer.buildWithScope(agentLayer, scope))
      const agent = Effect.runSync(Effect.provide(Agent.Agent, context))

      const load = start([fixture("load.mjs"), String(port), "3", "16"])
      children.push(load.child)
      const sent = Number(await load.line("done "))
      // The load has every answer: nothing is in flight. The agent stops as on SIGTERM.
      await Effect.runPromise(Scope.close(scope, Exit.void))
      const seen = server.lines.length
      server.child.kill("SIGUSR2")
      const answered = Number(await server.line("answered ", seen))
      const stats = await Effect.runPromise(agent.stats)
      await obs.stop()

      const drops = stats.requestsDropped
      const spans = obs.spans.filter((span) => span.kind === "server").length
      const dropped =
        drops.ring_full + drops.unparsed + drops.shutdown + Agent.spansLostInExport(stats.exporter)
      console.log(
        `answered ${answered} (load counted ${sent}); spans ${spans}, dropped ${dropped} ` +
          `(ring full ${drops.ring_full}, unparsed ${drops.unparsed}, shutdown ${drops.shutdown}); ` +
          `kernel: ${stats.capture?.dropped} records lost, ${stats.capture?.unrecorded} unattributed`
      )
      expect(answered).toBeGreaterThanOrEqual(sent)
      // Records were lost, every loss reported where it happened, and requests dropped for it.
      expect(stats.capture?.dropped).toBeGreaterThan(0)
      expect(stats.capture?.unrecorded).toBe(0)
      expect(drops.ring_full).toBeGreaterThan(0)
      expect(spans).toBeGreaterThan(0)
      expect(spans + dropped).toBe(answered)
      // The same accounting reached obs as the agent's own metrics.
      const reported = (name: string, reason?: string) =>
        obs.metrics
          .filter(
            (m) => m.name === name && (reason === undefined || m.attributes?.["iii.drop.reason"] === reason)
          )
          .reduce((sum, m) => sum + m.value, 0)
      expect(reported("iii.agent.requests.dropped", "ring_full")).toBe(drops.ring_full)
      expect(reported("iii.agent.spans")).toBe(stats.spans)
    },
    60_000
  )
})
