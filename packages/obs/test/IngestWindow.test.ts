/**
 * Impossible timestamps and statuses are refused at ingest (`invalid_batch` naming the item), as
 * the OpenTelemetry Collector and Tempo bound their ingestion windows.
 */
import { Duration } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { misfit } from "../src/internal/node/IngestWindow.js"
import * as ObsNodeConfig from "../src/ObsNodeConfig.js"
import { getJson, type RunningNode, startNode, TestAgent } from "./fixtures/Node.js"
import { log, span, traceId } from "./fixtures/Spans.js"

const hourNano = 3_600_000_000_000n
const dayNano = 24n * hourNano

describe("the ingest window", () => {
  let node: RunningNode
  let agent: TestAgent
  let seq = 0
  beforeAll(async () => {
    node = await startNode({ retention: Duration.days(7) })
    agent = new TestAgent(node.url)
    await agent.hello("window-agent")
  })
  afterAll(async () => {
    agent.close()
    await node.stop()
  })

  const send = async (batch: {
    spans?: Array<ReturnType<typeof span>>
    logs?: Array<ReturnType<typeof log>>
  }) => {
    // Five bad frames in a row close a connection: start another after each bad one.
    if (agent.frames.at(-1)?.type === "error") {
      agent.close()
      agent = new TestAgent(node.url)
      await agent.hello(`window-agent-${seq}`)
    }
    seq++
    agent.send({ type: "batch", seq, spans: batch.spans ?? [], metrics: [], logs: batch.logs ?? [] })
    return agent.ack(seq)
  }
  const now = () => BigInt(Date.now()) * 1_000_000n

  it("refuses start times outside [now - retention, now + 1 h], spans ending past it, and statuses outside 100-599", async () => {
    const year2126 = now() + 36_500n * dayNano
    const cases: Array<[ReturnType<typeof span>, string]> = [
      [span({ trace: 9100, startTimeUnixNano: 2n ** 64n - 1n }), "spans[0].startTimeUnixNano"],
      [span({ trace: 9101, startTimeUnixNano: year2126 }), "ahead of this node's clock"],
      [span({ trace: 9102, startTimeUnixNano: now() + 2n * hourNano }), "ahead of this node's clock"],
      [span({ trace: 9103, startTimeUnixNano: now() - 8n * dayNano }), "older than this node keeps"],
      [span({ trace: 9104, startTimeUnixNano: 0n }), "older than this node keeps"],
      [
        span({ trace: 9105, startTimeUnixNano: now(), durationNano: 2 * 3_600_000_000_000 }),
        "spans[0].durationNano"
      ],
      [
        span({
          trace: 9106,
          startTimeUnixNano: now(),
          http: { method: "GET", route: "/", statusCode: 99_999 }
        }),
        "spans[0].http.statusCode: 99999"
      ],
      [
        span({ trace: 9107, startTimeUnixNano: now(), http: { method: "GET", route: "/", statusCode: 99 } }),
        "statusCode: 99 "
      ]
    ]
    for (const [bad, mention] of cases) {
      const answer = await send({ spans: [bad] })
      expect(answer, mention).toMatchObject({ type: "error", code: "invalid_batch", seq, fatal: false })
      expect(answer?.type === "error" && answer.message, mention).toContain(mention)
      expect((await getJson(`${node.url}/v1/traces/${bad.traceId}`)).status, mention).toBe(404)
    }
    const log2126 = await send({ logs: [log({ correlationId: "future", timeUnixNano: year2126 })] })
    expect(log2126).toMatchObject({ code: "invalid_batch" })
    expect(log2126?.type === "error" && log2126.message).toContain("logs[0].timeUnixNano")
  })

  it("names the one span at fault, refuses its batch whole, and the connection goes on", async () => {
    const good = span({ trace: 9200, startTimeUnixNano: now() })
    const bad = span({ trace: 9201, startTimeUnixNano: now() + 3n * hourNano })
    const answer = await send({ spans: [good, bad] })
    expect(answer?.type === "error" && answer.message).toMatch(/^spans\[1\]\.startTimeUnixNano: /)
    expect((await getJson(`${node.url}/v1/traces/${traceId(9200)}`)).status).toBe(404)
    // Statuses at the edges, a clock 59 minutes fast, and the oldest day kept are all fine.
    const fine = [
      span({ trace: 9202, startTimeUnixNano: now(), http: { method: "GET", route: "/", statusCode: 100 } }),
      span({ trace: 9203, startTimeUnixNano: now(), http: { method: "GET", route: "/", statusCode: 599 } }),
      span({ trace: 9204, startTimeUnixNano: now() + 59n * 60_000_000_000n }),
      span({ trace: 9205, startTimeUnixNano: now() - 6n * dayNano })
    ]
    expect(await send({ spans: fine })).toEqual({ type: "ack", seq })
    const services = await getJson(`${node.url}/v1/services`)
    const lastSeen = BigInt(services.body.services[0].lastSeenUnixNano)
    expect(lastSeen).toBeLessThanOrEqual(now() + hourNano)
    const newestFirst = await getJson(`${node.url}/v1/traces?since=1h`)
    expect(newestFirst.body.traces[0].traceId).toBe(traceId(9204))
  })

  it("defaults to a skew of one hour", () => {
    expect(Duration.toMillis(ObsNodeConfig.defaults.maxClockSkew)).toBe(3_600_000)
  })

  it("as a pure check: the first misfit in spans, then logs, then metric points", () => {
    const window = { retentionNano: 7n * dayNano, maxSkewNano: hourNano }
    const at = now()
    expect(
      misfit({ spans: [span({ startTimeUnixNano: at })], logs: [], metrics: [] }, at, window)
    ).toBeUndefined()
    const metric = {
      name: "m",
      kind: "gauge" as const,
      service: "s",
      timeUnixNano: at + 2n * hourNano,
      intervalNano: 0,
      value: 1
    }
    expect(misfit({ spans: [], logs: [], metrics: [metric] }, at, window)).toMatch(
      /^metrics\[0\]\.timeUnixNano: /
    )
  })
})
