/**
 * A node whose wall clock jumps (an injected Clock): retention deletes nothing early, RED series and
 * searches stay well-formed, and agents whose timestamps are far from the node's clock are flagged
 * by the ingest window.
 */
import { Duration } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { RetentionClock } from "../src/internal/node/RetentionClock.js"
import { getJson, JumpingClock, type RunningNode, startNode, TestAgent } from "./fixtures/Node.js"
import { span, traceId } from "./fixtures/Spans.js"

const hourMs = 3_600_000
const dayMs = 24 * hourMs
const nowNano = () => BigInt(Date.now()) * 1_000_000n

describe("a node whose clock jumps", () => {
  const clock = new JumpingClock()
  let node: RunningNode
  let agent: TestAgent
  let seq = 0
  beforeAll(async () => {
    node = await startNode({ clock, retention: Duration.days(1), retentionInterval: Duration.millis(50) })
    agent = new TestAgent(node.url)
    await agent.hello("clock-agent")
  })
  afterAll(async () => {
    agent.close()
    await node.stop()
  })
  const send = async (spans: ReadonlyArray<ReturnType<typeof span>>) => {
    // A refused batch counts against the connection: start another after one.
    if (agent.frames.at(-1)?.type === "error") {
      agent.close()
      agent = new TestAgent(node.url)
      await agent.hello(`clock-agent-${seq}`)
    }
    seq++
    agent.send({ type: "batch", seq, spans, metrics: [], logs: [] })
    return agent.ack(seq)
  }
  const retentionPasses = () => new Promise((r) => setTimeout(r, 400))

  it("a jump forward past the retention deletes nothing, and flags agents on the true time", async () => {
    expect(await send([span({ trace: 9300, startTimeUnixNano: nowNano() })])).toEqual({ type: "ack", seq })
    clock.offsetMs = 30 * dayMs
    await retentionPasses()
    expect((await getJson(`${node.url}/v1/traces/${traceId(9300)}`)).status).toBe(200)
    const flagged = await send([span({ trace: 9301, startTimeUnixNano: nowNano() })])
    expect(flagged).toMatchObject({ type: "error", code: "invalid_batch", fatal: false })
    expect(flagged?.type === "error" && flagged.message).toContain("older than this node keeps")
  })

  it("queries relative to the node's clock stay well-formed: RED series of the right length, empty searches", async () => {
    const red = await getJson(`${node.url}/v1/services/checkout/red?window=5m&step=10s`)
    expect(red.status).toBe(200)
    expect(red.body.points).toHaveLength(30)
    expect(red.body.toSec - red.body.fromSec).toBe(300)
    expect(red.body.toSec * 1000).toBeGreaterThan(Date.now() + 29 * dayMs)
    const recent = await getJson(`${node.url}/v1/traces?since=1h`)
    expect(recent.status).toBe(200)
    expect(recent.body.traces).toEqual([])
  })

  it("a jump back flags agents ahead of it, and retention still deletes nothing", async () => {
    clock.offsetMs = -2 * hourMs
    const ahead = await send([span({ trace: 9302, startTimeUnixNano: nowNano() })])
    expect(ahead?.type === "error" && ahead.message).toContain("ahead of this node's clock")
    const onNodeTime = nowNano() - 2n * BigInt(hourMs) * 1_000_000n
    expect(await send([span({ trace: 9303, startTimeUnixNano: onNodeTime })])).toEqual({ type: "ack", seq })
    await retentionPasses()
    expect((await getJson(`${node.url}/v1/traces/${traceId(9300)}`)).status).toBe(200)
    expect((await getJson(`${node.url}/v1/traces/${traceId(9303)}`)).status).toBe(200)
    const red = await getJson(`${node.url}/v1/services/checkout/red?window=5m&step=10s`)
    expect(red.body.points.reduce((n: number, p: { requests: number }) => n + p.requests, 0)).toBe(1)
  })
})

describe("RetentionClock", () => {
  const t = 1_800_000_000_000_000_000n
  const ms = (n: number) => BigInt(n) * 1_000_000n
  const make = (newestStored?: bigint) => {
    const state = { wall: t, monotonic: 0 }
    const clock = new RetentionClock({
      wallNano: () => state.wall,
      monotonicMs: () => state.monotonic,
      newestStored
    })
    return { state, clock }
  }

  it("follows the wall clock as time passes", () => {
    const { state, clock } = make()
    state.wall += ms(5_000)
    state.monotonic += 5_000
    expect(clock.now()).toBe(t + ms(5_000))
  })

  it("does not follow a jump forward until time has passed or newer data arrived", () => {
    const { state, clock } = make()
    state.wall += ms(30 * dayMs)
    state.monotonic += 1_000
    expect(clock.now()).toBe(t + ms(1_000))
    clock.observe(t + ms(60_000))
    expect(clock.now()).toBe(t + ms(60_000))
  })

  it("follows a jump back at once", () => {
    const { state, clock } = make()
    state.wall -= ms(hourMs)
    expect(clock.now()).toBe(t - ms(hourMs))
  })

  it("after a restart on a clock ahead of the stored data, starts from the newest stored start", () => {
    const { clock } = make(t - ms(30 * dayMs))
    expect(clock.now()).toBe(t - ms(30 * dayMs))
    expect(make(t - ms(1_000)).clock.now()).toBe(t - ms(1_000))
    expect(make(t + ms(1_000)).clock.now()).toBe(t)
  })
})
