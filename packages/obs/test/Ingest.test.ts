import { WireProtocol } from "@iii/core"
import { Packr } from "msgpackr"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { getJson, type RunningNode, startNode, TestAgent } from "./fixtures/Node.js"
import { span, traceId } from "./fixtures/Spans.js"

const batch = (seq: number, spans: ReadonlyArray<ReturnType<typeof span>>): WireProtocol.Frame => ({
  type: "batch",
  seq,
  spans,
  metrics: [],
  logs: []
})

describe("ingest", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode({ maxFrameBytes: 64 * 1024 })
  })
  afterAll(() => node.stop())

  const spanCount = async (id: string) => {
    const r = await getJson(`${node.url}/v1/traces/${id}`)
    return r.status === 404 ? 0 : (r.body.spans as Array<unknown>).length
  }

  it("welcomes an agent, acks a batch after commit, and the spans are queryable once acked", async () => {
    const agent = new TestAgent(node.url)
    const welcome = await agent.hello("agent-ack")
    expect(welcome).toMatchObject({
      type: "welcome",
      version: WireProtocol.PROTOCOL_VERSION,
      node: "test-node"
    })
    const spans = [span({ trace: 1001 }), span({ trace: 1001 }), span({ trace: 1002 })]
    agent.send(batch(1, spans))
    expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
    expect(await spanCount(traceId(1001))).toBe(2)
    expect(await spanCount(traceId(1002))).toBe(1)
    agent.close()
  })

  it("stores a batch re-sent after a reconnect once, and acks it again", async () => {
    const spans = [span({ trace: 1010 }), span({ trace: 1010 })]
    const first = new TestAgent(node.url)
    await first.hello("agent-dup")
    first.send(batch(7, spans))
    expect(await first.ack(7)).toEqual({ type: "ack", seq: 7 })
    first.close()
    const second = new TestAgent(node.url)
    await second.hello("agent-dup")
    second.send(batch(7, spans))
    second.send(batch(8, [span({ trace: 1011 })]))
    expect(await second.ack(7)).toEqual({ type: "ack", seq: 7 })
    expect(await second.ack(8)).toEqual({ type: "ack", seq: 8 })
    expect(await spanCount(traceId(1010))).toBe(2)
    const metrics = await (await fetch(`${node.url}/metrics`)).text()
    expect(metrics).toMatch(/iii_obs_batches_duplicate_total [1-9]/)
    second.close()
  })

  it("answers malformed, truncated, oversize and wrong-version frames with coded errors and closes", async () => {
    const stored = span({ trace: 1020 })
    const good = new TestAgent(node.url)
    await good.hello("agent-good")
    good.send(batch(1, [stored]))
    await good.ack(1)

    const cases: Array<[string, (a: TestAgent) => void, string, number]> = [
      ["malformed", (a) => a.sendRaw(Buffer.from([0xc1, 0xc1, 0xc1])), "malformed", 1008],
      [
        "truncated",
        (a) => {
          const bytes = WireProtocol.encodeFrame(batch(2, [span()]))
          a.sendRaw(bytes.subarray(0, bytes.length - 10))
        },
        "truncated",
        1008
      ],
      ["oversize", (a) => a.sendRaw(new Uint8Array(100 * 1024)), "oversize", 1009],
      // Far over the limit: ws itself refuses the frame before it is buffered whole.
      ["far oversize", (a) => a.sendRaw(new Uint8Array(1024 * 1024)), "", 1009],
      [
        "wrong version",
        (a) => a.sendRaw(new Packr({ useRecords: false }).pack([2, 1, { id: "x" }])),
        "unsupported_version",
        1008
      ],
      ["text frame", (a) => a.sendRaw("hello"), "malformed", 1008],
      ["batch before hello", (a) => a.send(batch(1, [span()])), "protocol", 1008]
    ]
    for (const [name, misbehave, code, closeCode] of cases) {
      const agent = new TestAgent(node.url)
      await agent.opened()
      if (name !== "batch before hello" && name !== "wrong version") await agent.hello(`agent-${name}`)
      misbehave(agent)
      if (code !== "") {
        const error = await agent.error()
        expect(error, name).toMatchObject({ type: "error", code, fatal: true })
      }
      expect((await agent.closedWith()).code, name).toBe(closeCode)
    }
    // Nothing already stored was harmed, and well-behaved connections carry on.
    expect(await spanCount(traceId(1020))).toBe(1)
    good.send(batch(2, [span({ trace: 1021 })]))
    expect(await good.ack(2)).toEqual({ type: "ack", seq: 2 })
    good.close()
  })

  it("keeps the connection after an invalid batch, and drops a peer that keeps sending them", async () => {
    const agent = new TestAgent(node.url)
    await agent.hello("agent-invalid")
    const invalid = { ...span(), traceId: "0".repeat(32) } as ReturnType<typeof span>
    agent.send(batch(1, [invalid]))
    expect(await agent.error()).toMatchObject({ code: "invalid_batch", seq: 1, fatal: false })
    agent.send(batch(2, [span({ trace: 1030 })]))
    expect(await agent.ack(2)).toEqual({ type: "ack", seq: 2 })
    for (let seq = 3; seq < 10; seq++) agent.send(batch(seq, [invalid]))
    expect((await agent.closedWith()).code).toBe(1008)
    expect(await spanCount(traceId(1030))).toBe(1)
  })

  it("refuses a batch whose labels cannot fit in an index key, alone: batches of the same commit are stored", async () => {
    const bad = new TestAgent(node.url)
    const good = new TestAgent(node.url)
    await bad.hello("agent-long-labels")
    await good.hello("agent-beside-long-labels")
    bad.send(batch(1, [span({ trace: 1050, service: "ü".repeat(1200) })]))
    good.send(batch(1, [span({ trace: 1051 })]))
    expect(await bad.error()).toMatchObject({
      code: "invalid_batch",
      seq: 1,
      fatal: false,
      message: expect.stringContaining("spans[0]: service and route")
    })
    expect(await good.ack(1)).toEqual({ type: "ack", seq: 1 })
    bad.send(batch(2, [span({ trace: 1052 })]))
    expect(await bad.ack(2)).toEqual({ type: "ack", seq: 2 })
    expect([
      await spanCount(traceId(1050)),
      await spanCount(traceId(1051)),
      await spanCount(traceId(1052))
    ]).toEqual([0, 1, 1])
    bad.close()
    good.close()
  })

  it("stores nothing of a batch with one bad span among good ones", async () => {
    const agent = new TestAgent(node.url)
    await agent.hello("agent-mixed")
    const bad = { ...span({ trace: 1041 }), durationNano: -5 }
    agent.send(batch(1, [span({ trace: 1040 }), bad, span({ trace: 1042 })]))
    expect(await agent.error()).toMatchObject({ code: "invalid_batch", seq: 1, fatal: false })
    agent.send(batch(2, [span({ trace: 1043 })]))
    expect(await agent.ack(2)).toEqual({ type: "ack", seq: 2 })
    expect([
      await spanCount(traceId(1040)),
      await spanCount(traceId(1042)),
      await spanCount(traceId(1043))
    ]).toEqual([0, 0, 1])
    agent.close()
  })
})
