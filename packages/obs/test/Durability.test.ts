import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "vitest"
import { getJson, TestAgent, tempDir } from "./fixtures/Node.js"
import { span, traceId } from "./fixtures/Spans.js"

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))

/** Spawns a real node process (Node 24 running the TS sources) and waits for its address. */
const spawnNode = (dataDir: string) =>
  new Promise<{ child: ChildProcess; url: string }>((resolve, reject) => {
    // --experimental-transform-types: core uses TS parameter properties, which plain type stripping rejects.
    const args = [
      "--experimental-transform-types",
      "--no-warnings",
      "--import",
      fileURLToPath(new URL("../../../scripts/ts-sources.mjs", import.meta.url)),
      fixture("obs-node-process.ts"),
      dataDir
    ]
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString()
      const line = out.split("\n").find((l) => l.startsWith("{"))
      if (line !== undefined) resolve({ child, url: (JSON.parse(line) as { url: string }).url })
    })
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString()
    })
    child.once("exit", (code) => reject(new Error(`node process exited (${code}) before listening: ${err}`)))
  })

describe("durability", () => {
  const dir = tempDir()
  afterAll(() => dir.remove())

  it("every acknowledged span survives SIGKILL of the node process", async () => {
    const first = await spawnNode(dir.path)
    const agent = new TestAgent(first.url)
    await agent.hello("crash-agent")
    // Recent timestamps: the restarted node's retention pass must not touch them.
    const now = BigInt(Date.now()) * 1_000_000n
    const batches = 150
    const perBatch = 500
    const acked: Array<number> = []
    agent.ws.on("message", () => {
      for (const f of agent.frames) if (f.type === "ack" && !acked.includes(f.seq)) acked.push(f.seq)
    })
    const sent = Array.from({ length: batches }, (_, i) =>
      Array.from({ length: perBatch }, () => span({ trace: 90_001 + i, startTimeUnixNano: now }))
    )
    sent.forEach((spans, i) => {
      agent.send({ type: "batch", seq: i + 1, spans, metrics: [], logs: [] })
    })
    // Kill while later batches are still queued or being written.
    await agent.until((fs) => fs.find((f) => f.type === "ack" && f.seq >= 10))
    first.child.kill("SIGKILL")
    await new Promise((r) => first.child.once("exit", r))
    await agent.closedWith()
    expect(acked.length).toBeGreaterThanOrEqual(10)
    console.info(`killed with ${acked.length} of ${batches} batches acknowledged`)

    const second = await spawnNode(dir.path)
    try {
      for (const seq of acked) {
        const r = await getJson(`${second.url}/v1/traces/${traceId(90_000 + seq)}`)
        expect(r.status, `batch ${seq}`).toBe(200)
        expect(r.body.spans, `batch ${seq}`).toHaveLength(perBatch)
      }
      // Re-sending everything after the restart stores each batch once: acked ones are duplicates.
      const again = new TestAgent(second.url)
      await again.hello("crash-agent")
      sent.forEach((spans, i) => {
        again.send({ type: "batch", seq: i + 1, spans, metrics: [], logs: [] })
      })
      expect(await again.ack(batches)).toEqual({ type: "ack", seq: batches })
      const one = await getJson(`${second.url}/v1/traces/${traceId(90_000 + (acked[0] ?? 1))}`)
      expect(one.body.spans).toHaveLength(perBatch)
      const metrics = await (await fetch(`${second.url}/metrics`)).text()
      expect(Number(/iii_obs_batches_duplicate_total (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(
        acked.length
      )
      again.close()
    } finally {
      second.child.kill("SIGKILL")
    }
  }, 120_000)
})
