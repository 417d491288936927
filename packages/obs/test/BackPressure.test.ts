import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { WebSocketServer } from "ws"
import { GroupCommit } from "../src/internal/node/GroupCommit.js"
import { handleIngest } from "../src/internal/node/IngestConnection.js"
import { NodeCounters } from "../src/internal/node/NodeCounters.js"
import type { IngestBatch, WriteOutcome } from "../src/Store.js"
import { TestAgent } from "./fixtures/Node.js"
import { batch, span } from "./fixtures/Spans.js"

/** A store write that completes only when the test opens the gate: a disk that has stalled. */
const stalledDisk = () => {
  const waiting: Array<() => void> = []
  const writes: Array<ReadonlyArray<IngestBatch>> = []
  let open = false
  return {
    writes,
    write: (batches: ReadonlyArray<IngestBatch>) =>
      new Promise<ReadonlyArray<WriteOutcome>>((resolve) => {
        writes.push(batches)
        const done = () => resolve(batches.map(() => "stored" as const))
        if (open) done()
        else waiting.push(done)
      }),
    open: () => {
      open = true
      for (const f of waiting.splice(0)) f()
    }
  }
}

describe("back-pressure", () => {
  it("the commit queue reports full while the disk is stalled and makes room once it catches up", async () => {
    const disk = stalledDisk()
    const committed: Array<number> = []
    const gc = new GroupCommit({
      prepare: (b: IngestBatch) => Either.right(b),
      write: disk.write,
      committed: (bs) => committed.push(...bs.map((b) => b.seq)),
      maxQueuedSpans: 150,
      maxSpansPerCommit: 1000,
      maxInFlight: 1
    })
    const spans = Array.from({ length: 100 }, () => span())
    const acks = [1, 2, 3].map((seq) => gc.submit(batch("a", seq, spans)))
    expect(gc.full).toBe(true)
    let room = false
    gc.onRoom(() => {
      room = true
    })
    await new Promise((r) => setTimeout(r, 20))
    expect(room).toBe(false)
    // Only one transaction is in flight; the rest wait in the queue.
    expect(disk.writes).toHaveLength(1)
    disk.open()
    expect(await Promise.all(acks)).toEqual(["stored", "stored", "stored"])
    expect(room).toBe(true)
    expect(gc.full).toBe(false)
    expect(gc.depth).toBe(0)
    expect(committed).toEqual([1, 2, 3])
  })

  it("an ingest connection stops reading its socket while the queue is full and resumes after", async () => {
    const disk = stalledDisk()
    const counters = new NodeCounters()
    const maxQueuedSpans = 1000
    const gc = new GroupCommit({
      prepare: (b: IngestBatch) => Either.right(b),
      write: disk.write,
      committed: () => undefined,
      maxQueuedSpans,
      maxSpansPerCommit: 500,
      maxInFlight: 1
    })
    const server = createServer()
    const wss = new WebSocketServer({ server })
    wss.on("connection", (ws) =>
      handleIngest(
        ws,
        {
          nodeId: "bp",
          maxFrameBytes: 16 << 20,
          maxStrikes: 5,
          helloTimeoutMs: 10_000,
          misfit: () => undefined
        },
        gc,
        counters,
        () => undefined
      )
    )
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    const { port } = server.address() as AddressInfo
    try {
      const agent = new TestAgent(`http://127.0.0.1:${port}`)
      await agent.hello("bp-agent")
      const batches = 40
      const payload = "p".repeat(200)
      for (let seq = 1; seq <= batches; seq++)
        agent.send({
          type: "batch",
          seq,
          spans: Array.from({ length: 500 }, () => span({ attributes: { payload } })),
          metrics: [],
          logs: []
        })
      while (counters.pausedConnections === 0) await new Promise((r) => setTimeout(r, 5))
      await new Promise((r) => setTimeout(r, 100))
      // Paused: what the node holds stays near the limit instead of all 40 batches (20,000 spans).
      expect(counters.pausedConnections).toBe(1)
      expect(gc.depth).toBeLessThan(maxQueuedSpans + 3 * 501)
      disk.open()
      expect(await agent.ack(batches)).toEqual({ type: "ack", seq: batches })
      expect(counters.pausedConnections).toBe(0)
      expect(disk.writes.flat().map((b) => b.seq)).toEqual(Array.from({ length: batches }, (_, i) => i + 1))
      agent.close()
    } finally {
      wss.close()
      server.closeAllConnections()
      server.close()
    }
  })
})
