import { Duration } from "effect"
import { describe, expect, it } from "vitest"
import { getJson, startNode, TestAgent } from "./fixtures/Node.js"
import { log, span, traceId } from "./fixtures/Spans.js"

describe("retention", () => {
  it("the node deletes data as it passes its retention, in the background while ingest goes on", async () => {
    const node = await startNode({ retention: Duration.seconds(10), retentionInterval: Duration.millis(50) })
    try {
      const now = BigInt(Date.now()) * 1_000_000n
      // Within the ingest window when sent, past the retention a second later: each pass must take
      // its cutoff anew (the node once kept the cutoff of its first pass for good).
      const nineSecondsAgo = now - 9_000_000_000n
      const agent = new TestAgent(node.url)
      await agent.hello("retention-agent")
      agent.send({
        type: "batch",
        seq: 1,
        spans: [
          span({ trace: 7000, startTimeUnixNano: nineSecondsAgo }),
          span({ trace: 7001, startTimeUnixNano: now, correlationId: "keep-me" })
        ],
        metrics: [],
        logs: [
          log({ correlationId: "keep-me", timeUnixNano: now }),
          log({ correlationId: "old", timeUnixNano: nineSecondsAgo })
        ]
      })
      expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
      // The background pass runs every 50 ms; wait for it to have removed the old trace.
      const gone = async () =>
        (await getJson(`${node.url}/v1/traces/${traceId(7000)}`)).status === 404 &&
        (await getJson(`${node.url}/v1/correlate/old`)).status === 404
      let removed = false
      for (let i = 0; i < 400 && !removed; i++) {
        removed = await gone()
        if (!removed) await new Promise((r) => setTimeout(r, 25))
      }
      expect(removed).toBe(true)
      // Ingest keeps working alongside, and recent data stays.
      agent.send({
        type: "batch",
        seq: 2,
        spans: [span({ trace: 7002, startTimeUnixNano: now })],
        metrics: [],
        logs: []
      })
      expect(await agent.ack(2)).toEqual({ type: "ack", seq: 2 })
      expect((await getJson(`${node.url}/v1/traces/${traceId(7001)}`)).status).toBe(200)
      expect((await getJson(`${node.url}/v1/traces/${traceId(7002)}`)).status).toBe(200)
      const kept = await getJson(`${node.url}/v1/correlate/keep-me`)
      expect(kept.body.logs).toHaveLength(1)
      agent.close()
    } finally {
      await node.stop()
    }
  })
})
