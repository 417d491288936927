/**
 * A data directory deleted or replaced under a running node: the node notices (on a timer and
 * before acknowledging), turns not ready, acknowledges nothing more, logs it, and /metrics shows
 * it; what it acknowledged before stays where it was stored.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs"
import { join } from "node:path"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import * as LmdbStore from "../src/LmdbStore.js"
import { getJson, type RunningNode, startNode, TestAgent, tempDir } from "./fixtures/Node.js"
import { span, traceId } from "./fixtures/Spans.js"

const metric = async (node: RunningNode, name: string) =>
  Number(new RegExp(`^${name} (\\d+)$`, "m").exec(await (await fetch(`${node.url}/metrics`)).text())?.[1])

/** Sends a batch (one trace of 50 spans, trace id = 500,000 + seq) every few ms; records the acks. */
const traffic = (agent: TestAgent) => {
  const acked = new Set<number>()
  const refused: Array<string> = []
  let seq = 0
  let running = true
  agent.ws.on("message", () => {
    for (const f of agent.frames) {
      if (f.type === "ack") acked.add(f.seq)
      else if (f.type === "error" && !refused.includes(f.message)) refused.push(f.message)
    }
  })
  const loop = (async () => {
    while (running && agent.closed === undefined) {
      seq++
      const now = BigInt(Date.now()) * 1_000_000n
      agent.send({
        type: "batch",
        seq,
        spans: Array.from({ length: 50 }, () => span({ trace: 500_000 + seq, startTimeUnixNano: now })),
        metrics: [],
        logs: []
      })
      await new Promise((r) => setTimeout(r, 4))
    }
  })()
  return {
    acked,
    refused,
    sent: () => seq,
    stop: async () => {
      running = false
      await loop
    }
  }
}

const waitFor = async (what: string, f: () => Promise<boolean> | boolean, ms = 10_000) => {
  const deadline = Date.now() + ms
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe("a data directory lost under a running node", () => {
  const dirs: Array<{ remove: () => void }> = []
  afterAll(() => {
    for (const d of dirs) d.remove()
  })

  it("deleted under traffic: not ready, nothing acknowledged after, logged, shown in /metrics", async () => {
    const dir = tempDir()
    dirs.push(dir)
    const logs: Array<string> = []
    const node = await startNode({ dataDir: join(dir.path, "data"), logs })
    const agent = new TestAgent(node.url)
    await agent.hello("doomed-agent")
    const load = traffic(agent)
    try {
      await waitFor("acks before the deletion", () => load.acked.size >= 30)
      rmSync(join(dir.path, "data"), { recursive: true, force: true })
      await waitFor("not ready", async () => (await getJson(`${node.url}/readyz`)).status === 503, 5_000)
      const ackedAtDetection = load.acked.size
      const sentAtDetection = load.sent()
      await new Promise((r) => setTimeout(r, 1_000))
      // Batches sent once the loss was known are all refused, none acknowledged.
      expect(Array.from(load.acked).filter((seq) => seq > sentAtDetection)).toEqual([])
      expect(load.acked.size).toBeLessThanOrEqual(ackedAtDetection + 2)
      expect(load.sent()).toBeGreaterThan(sentAtDetection + 50)
      expect(load.refused.some((m) => m.includes("is gone"))).toBe(true)
      const readyz = await getJson(`${node.url}/readyz`)
      expect(readyz.body).toContain("it was deleted or moved while the node ran")
      expect(await metric(node, "iii_obs_store_failed")).toBe(1)
      expect(await metric(node, "iii_obs_write_failures_total")).toBeGreaterThan(0)
      expect(logs.filter((l) => l.startsWith("ERROR") && l.includes("is gone"))).toHaveLength(1)
      // Nothing recreated the directory.
      expect(existsSync(join(dir.path, "data"))).toBe(false)
    } finally {
      await load.stop()
      agent.close()
      await node.stop()
    }
  })

  it("replaced (moved away, an empty one in its place): what was acknowledged is in the moved directory", async () => {
    const dir = tempDir()
    dirs.push(dir)
    const data = join(dir.path, "data")
    const node = await startNode({ dataDir: data })
    const agent = new TestAgent(node.url)
    await agent.hello("moved-agent")
    const load = traffic(agent)
    let acked: ReadonlyArray<number> = []
    try {
      await waitFor("acks before the move", () => load.acked.size >= 30)
      renameSync(data, join(dir.path, "data.old"))
      mkdirSync(data)
      await waitFor("not ready", async () => (await getJson(`${node.url}/readyz`)).status === 503, 5_000)
      expect((await getJson(`${node.url}/readyz`)).body).toContain("replaced while the node ran")
      await new Promise((r) => setTimeout(r, 300))
      acked = Array.from(load.acked)
    } finally {
      await load.stop()
      agent.close()
      await node.stop()
    }
    // The node wrote nothing into the new directory.
    expect(readdirSync(data)).toEqual([])
    const missing = await Effect.gen(function* () {
      const store = yield* LmdbStore.make({ path: join(dir.path, "data.old") })
      const gone: Array<number> = []
      for (const seq of acked)
        if ((yield* store.reader.trace(traceId(500_000 + seq))).length !== 50) gone.push(seq)
      return gone
    }).pipe(Effect.scoped, Effect.runPromise)
    expect(acked.length).toBeGreaterThanOrEqual(30)
    expect(missing).toEqual([])
  })
})
