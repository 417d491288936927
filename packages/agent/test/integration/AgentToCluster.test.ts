/**
 * The exporter against a real obs cluster (three `iii obs` processes, replication 3): the node it
 * sends to is cut off from the other two (they are paused past the heartbeat timeout), so it refuses
 * the batch it cannot get a write quorum for (`overloaded`, not fatal). The exporter keeps the batch
 * and sends it again until the others are back; then it is acknowledged, and stored once, readable
 * through every node.
 */
import { type Telemetry, TraceContext } from "@iii/core"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  buildCli,
  eventually,
  get,
  metric,
  startCluster,
  type TestCluster,
  tails
} from "../../../obs/test/fixtures/Cluster.js"
import * as Exporter from "../../src/Exporter.js"

const span = (): Telemetry.Span => ({
  traceId: TraceContext.newTraceId(),
  spanId: TraceContext.newSpanId(),
  correlationId: "minority",
  service: "checkout",
  kind: "server",
  name: "GET /items/{id}",
  startTimeUnixNano: BigInt(Date.now()) * 1_000_000n,
  durationNano: 1_000_000,
  http: { method: "GET", route: "/items/{id}", path: "/items/1", statusCode: 200 },
  error: false
})

describe("agent → obs cluster", () => {
  let cluster: TestCluster
  beforeAll(async () => {
    buildCli()
    cluster = await startCluster(3)
  }, 120_000)
  afterAll(() => cluster?.stop())

  it("re-sends a batch a cut-off node refused for want of a quorum; once the others are back it is stored once", async () => {
    const [alone, a, b] = cluster.nodes
    if (alone === undefined || a === undefined || b === undefined) throw new Error("no nodes")
    try {
      await eventually("every member up", 30_000, async () =>
        (await get(`${alone.url}/v1/cluster`))?.body.members.every((m: { state: string }) => m.state === "up")
      )
      await a.signal("SIGSTOP")
      await b.signal("SIGSTOP")
      await eventually("the others are down", 30_000, async () => {
        const view = await get(`${alone.url}/v1/cluster`)
        return view?.body.members.filter((m: { state: string }) => m.state === "down").length === 2
      })
      const sent = span()
      await Effect.runPromise(
        Effect.scoped(
          Effect.gen(function* () {
            const exporter = yield* Exporter.make({
              urls: [alone.url],
              agent: { id: Exporter.newAgentId(), service: "checkout" },
              flushIntervalMs: 50,
              initialBackoffMs: 200,
              maxBackoffMs: 1_000
            })
            const stats = () => Effect.runSync(exporter.stats)
            exporter.span(sent)
            yield* exporter.flush
            yield* Effect.promise(async () => {
              await eventually(
                "the batch refused and sent again",
                30_000,
                async () => stats().batchesResent >= 2
              )
              expect(stats()).toMatchObject({ batchesAcked: 0, bufferedBatches: 1, batchesRejected: 0 })
              expect(
                await metric(alone.url, "iii_obs_cluster_writes_unavailable_total")
              ).toBeGreaterThanOrEqual(2)
              await a.signal("SIGCONT")
              await b.signal("SIGCONT")
              await eventually(
                "acknowledged once the others are back",
                60_000,
                async () => stats().batchesAcked === 1
              )
              expect(stats()).toMatchObject({ bufferedBatches: 0, batchesDropped: 0, batchesRejected: 0 })
            })
          })
        )
      )
      for (const node of cluster.nodes) {
        const trace = await get(`${node.url}/v1/traces/${sent.traceId}`)
        expect(trace?.status, `${node.address} reads the trace`).toBe(200)
        expect(trace?.body.spans.map((s: Telemetry.Span) => s.spanId)).toEqual([sent.spanId])
        expect(trace?.body.partial).toBeUndefined()
      }
    } catch (e) {
      console.error(tails(cluster.nodes))
      throw e
    } finally {
      await a.signal("SIGCONT")
      await b.signal("SIGCONT")
    }
  }, 180_000)
})
