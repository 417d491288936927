/**
 * A node whose data directory is a small filesystem (a tmpfs this test mounts, as root) fills up
 * under ingest: it stops acknowledging (error frames naming the cause), never acknowledges what it
 * did not store, keeps serving queries, damages nothing stored before, and resumes by itself when
 * space returns.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { getJson, type RunningNode, startNode, TestAgent } from "./fixtures/Node.js"
import { span, traceId } from "./fixtures/Spans.js"

const mountPoint = mkdtempSync(join(tmpdir(), "iii-obs-full-"))
const mounted = (() => {
  if (process.getuid?.() !== 0) return "not root"
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=12m", "tmpfs", mountPoint], { stdio: "pipe" })
    return true
  } catch (e) {
    return `mount -t tmpfs failed: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`
  }
})()
if (mounted !== true) {
  console.warn(`skipping the disk-full test: ${mounted}`)
  rmdirSync(mountPoint)
}

describe.skipIf(mounted !== true)("a full disk", () => {
  let node: RunningNode
  const filler = join(mountPoint, "filler")
  beforeAll(async () => {
    // Space the operator can free later.
    writeFileSync(filler, Buffer.alloc(4 * 1024 * 1024, 1))
    node = await startNode({ dataDir: join(mountPoint, "data") })
  })
  afterAll(async () => {
    await node?.stop()
    execFileSync("umount", [mountPoint])
    rmdirSync(mountPoint)
  })

  const batchOf = (seq: number) => {
    const now = BigInt(Date.now()) * 1_000_000n
    return {
      type: "batch" as const,
      seq,
      spans: Array.from({ length: 100 }, () =>
        span({ trace: 700_000 + seq, startTimeUnixNano: now, attributes: { payload: "p".repeat(400) } })
      ),
      metrics: [],
      logs: []
    }
  }

  it("stops acknowledging, keeps answering queries, and resumes when space returns", async () => {
    const agent = new TestAgent(node.url)
    await agent.hello("full-agent")
    const acked: Array<number> = []
    const refused = new Map<number, string>()
    let seq = 0
    // One batch at a time, each answered before the next: the store fills up within ~12 MB.
    while (refused.size < 3 && seq < 2_000) {
      seq++
      agent.send(batchOf(seq))
      const answer = await agent.ack(seq)
      if (answer?.type === "ack") acked.push(seq)
      else if (answer?.type === "error" && answer.seq === seq && !answer.fatal)
        refused.set(seq, answer.message)
      else throw new Error(`unexpected answer ${JSON.stringify(answer)}`)
    }
    expect(refused.size).toBe(3)
    expect(acked.length).toBeGreaterThan(5)
    const [firstRefused, message] = Array.from(refused)[0] ?? [0, ""]
    expect(message).toMatch(
      /^batch not stored \(store write failed: .*MiB free on the data directory's filesystem\); resend it$/
    )
    // Queries go on; every acknowledged batch is whole; a refused one is not there.
    expect((await getJson(`${node.url}/v1/services`)).status).toBe(200)
    for (const s of acked)
      expect(
        (await getJson(`${node.url}/v1/traces/${traceId(700_000 + s)}`)).body.spans,
        `seq ${s}`
      ).toHaveLength(100)
    expect((await getJson(`${node.url}/v1/traces/${traceId(700_000 + firstRefused)}`)).status).toBe(404)
    expect((await getJson(`${node.url}/readyz`)).status).toBe(200)

    // The operator frees space: resending the refused batches stores them, and ingest goes on.
    rmSync(filler)
    for (const s of refused.keys()) {
      agent.send(batchOf(s))
      expect(await agent.until((fs) => fs.find((f) => f.type === "ack" && f.seq === s))).toEqual({
        type: "ack",
        seq: s
      })
    }
    seq++
    agent.send(batchOf(seq))
    expect(await agent.ack(seq)).toEqual({ type: "ack", seq })
    for (const s of [...acked, ...refused.keys(), seq])
      expect(
        (await getJson(`${node.url}/v1/traces/${traceId(700_000 + s)}`)).body.spans,
        `seq ${s}`
      ).toHaveLength(100)
    agent.close()
  })
})
