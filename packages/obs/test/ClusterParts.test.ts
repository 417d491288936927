/** The cluster's pure parts: placement, merging answers, membership from EndpointSlices, peer frames. */
import { describe, expect, it } from "vitest"
import { addressesOf } from "../src/internal/cluster/EndpointSlices.js"
import { Membership } from "../src/internal/cluster/Membership.js"
import * as Merge from "../src/internal/cluster/Merge.js"
import * as Protocol from "../src/internal/cluster/PeerProtocol.js"
import { defaultRingLayout, Placement } from "../src/internal/cluster/Placement.js"
import type { TraceSummary } from "../src/Store.js"
import { span, t0, traceId } from "./fixtures/Spans.js"

const nodes = (n: number) => Array.from({ length: n }, (_, i) => `10.0.0.${i + 1}:4320`)

describe("Placement", () => {
  it("gives every key `replication` distinct owners, the same on every node, and a fair share to each", () => {
    const a = new Placement(nodes(5), defaultRingLayout)
    const b = new Placement([...nodes(5)].reverse(), defaultRingLayout)
    expect(a.id).toBe(b.id)
    const count = new Map<string, number>()
    for (let i = 0; i < 20_000; i++) {
      const owners = a.ownersOf(traceId(i))
      expect(new Set(owners).size).toBe(3)
      expect(b.ownersOf(traceId(i))).toEqual(owners)
      for (const o of owners) count.set(o, (count.get(o) ?? 0) + 1)
    }
    const shares = [...count.values()].map((c) => c / 20_000)
    for (const s of shares) expect(Math.abs(s - 3 / 5)).toBeLessThan(0.05)
    expect(a.share(nodes(5)[0] ?? "").replica).toBeCloseTo(0.6, 1)
  })

  it("has one owner set of every member up to the replication factor, and caps the quorum", () => {
    const two = new Placement(nodes(2), defaultRingLayout)
    expect(two.sets).toEqual([nodes(2)])
    expect([two.replicas, two.quorum]).toEqual([2, 2])
    const three = new Placement(nodes(3), defaultRingLayout)
    expect([three.replicas, three.quorum, three.setOf("anything")]).toEqual([3, 2, 0])
  })

  it("moves only what the joiner now owns", () => {
    const before = new Placement(nodes(5), defaultRingLayout)
    const after = new Placement(nodes(6), defaultRingLayout)
    const joiner = nodes(6)[5] ?? ""
    let moved = 0
    for (let i = 0; i < 20_000; i++) {
      const gained = after.ownersOf(traceId(i)).filter((o) => !before.ownersOf(traceId(i)).includes(o))
      expect(gained.every((o) => o === joiner)).toBe(true)
      moved += gained.length
    }
    // Copies moved: about 1/N of the 3 × 20,000 stored.
    expect(moved / 60_000).toBeLessThan(1 / 6 + 0.02)
  })
})

const summary = (id: number, startMicros: number, spanCount: number): TraceSummary => ({
  traceId: traceId(id),
  correlationId: traceId(id),
  matched: {
    service: "s",
    name: "n",
    spanId: `${id}`.padStart(16, "0"),
    startTimeUnixNano: BigInt(startMicros) * 1000n
  },
  rootService: "s",
  rootName: "n",
  startTimeUnixNano: BigInt(startMicros) * 1000n,
  durationNano: 1,
  spanCount,
  errorCount: 0,
  services: ["s"]
})

describe("Merge", () => {
  it("lists each trace once, the copy with the most spans, newest first, cut where every page is complete", () => {
    const first = Merge.pages(
      [
        { traces: [summary(1, 300, 2), summary(2, 200, 1)] },
        { traces: [summary(1, 300, 3), summary(3, 250, 1)] }
      ],
      10
    )
    expect(first.traces.map((t) => [t.traceId, t.spanCount])).toEqual([
      [traceId(1), 3],
      [traceId(3), 1],
      [traceId(2), 1]
    ])
    expect(first.nextCursor).toBeUndefined()
    const limited = Merge.pages([{ traces: [summary(1, 300, 1), summary(2, 200, 1), summary(3, 100, 1)] }], 2)
    expect(limited.traces).toHaveLength(2)
    expect(limited.nextCursor).toBeDefined()
  })

  it("keeps spans once, RED cells at their fullest replica, services at their newest sighting", () => {
    const s = span({ trace: 1, startTimeUnixNano: t0 })
    expect(
      Merge.spans([[s], [s, span({ trace: 1, startTimeUnixNano: t0 - 1n })]]).map((x) => x.startTimeUnixNano)
    ).toEqual([t0 - 1n, t0])
    const cell = (count: number) => ({
      bucketStartSec: 10,
      route: "/x",
      count,
      errors: 0,
      sketch: { count } as never
    })
    expect(Merge.redCells([[cell(5)], [cell(7)], [cell(6)]]).map((c) => c.count)).toEqual([7])
    expect(
      Merge.services([
        [{ service: "a", lastSeenUnixNano: 1n, composition: "old" }],
        [{ service: "a", lastSeenUnixNano: 2n, composition: "new" }]
      ])
    ).toEqual([{ service: "a", lastSeenUnixNano: 2n, composition: "new" }])
  })
})

describe("Membership", () => {
  const membership = (source: ReadonlyArray<string>, admitsJoiners = true) =>
    new Membership({
      self: "a:1",
      layout: defaultRingLayout,
      source,
      admitsJoiners,
      joined: [],
      left: [],
      settled: undefined
    })

  it("admits a joiner only from a static list, and moves a leaving member out of the write placement", () => {
    const m = membership(["a:1", "b:1", "c:1"])
    expect(m.isMember("d:1")).toBe(false)
    expect(m.admit("d:1")).toBe(true)
    expect(m.current.members).toEqual(["a:1", "b:1", "c:1", "d:1"])
    expect(m.noteStatus("b:1", { state: "leaving", settled: "", repaired: "", tail: 0 })).toBe(true)
    expect(m.current.members).toEqual(["a:1", "c:1", "d:1"])
    // Reads still ask the placement that holds the data (b's) while it moves.
    expect(m.readPlacements().some((p) => p.members.includes("b:1"))).toBe(true)
    m.noteStatus("b:1", { state: "left", settled: "", repaired: "", tail: 0 })
    expect(m.members()).toEqual(["a:1", "c:1", "d:1"])
    expect(membership(["a:1"], false).admit("d:1")).toBe(false)
  })

  it("shows each member as /v1/cluster does: what it says of itself while it answers, down when it does not", () => {
    const m = membership(["a:1", "b:1", "c:1", "d:1", "e:1"])
    const states = () => Object.fromEntries(m.view().map((v) => [v.address, v.state]))
    // Nobody heard from yet: this node joins, the others are down.
    expect(states()).toEqual({ "a:1": "joining", "b:1": "down", "c:1": "down", "d:1": "down", "e:1": "down" })
    const status = (state: "joining" | "up" | "leaving") => ({ state, settled: "", repaired: "", tail: 0 })
    for (const peer of ["b:1", "c:1", "d:1", "e:1"]) m.setLive(peer, true)
    m.noteStatus("b:1", status("up"))
    m.noteStatus("c:1", status("joining"))
    m.noteStatus("d:1", status("leaving"))
    m.setSelfState("up")
    // e:1 answers pings but has not told its state yet: joining until it does.
    expect(states()).toEqual({
      "a:1": "up",
      "b:1": "up",
      "c:1": "joining",
      "d:1": "leaving",
      "e:1": "joining"
    })
    // b stops answering: down, whatever it said last; back, what it says again.
    m.setLive("b:1", false)
    expect(states()["b:1"]).toBe("down")
    expect(m.view().find((v) => v.address === "b:1")?.silentMs).toBeGreaterThanOrEqual(0)
    m.setLive("b:1", true)
    expect(states()["b:1"]).toBe("up")
    m.setSelfState("leaving")
    expect(states()["a:1"]).toBe("leaving")
  })
})

describe("PeerProtocol", () => {
  it("carries a call's bulk after its head, byte strings through a bulk, and refuses a bulk of anything else", () => {
    const parts = [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array(70_000).fill(7)]
    const bulk = Protocol.packByteStrings(parts)
    const head = Protocol.encodeCallHead(41, "write", { placement: "p" }, bulk.length)
    const frame = Protocol.decode(Buffer.concat([head, bulk]))
    expect(frame?.slice(0, 4)).toEqual(["call", 41, "write", { placement: "p" }])
    const carried = frame?.[0] === "call" ? frame[4] : undefined
    expect(carried).toBeInstanceOf(Uint8Array)
    expect(Protocol.unpackByteStrings(carried as Uint8Array).map((p) => Array.from(p))).toEqual(
      parts.map((p) => Array.from(p))
    )
    expect(Protocol.countByteStrings(carried as Uint8Array)).toBe(3)
    expect(Protocol.countByteStrings(Protocol.packByteStrings([]))).toBe(0)
    // A call without bulk is the 4-element frame it always was.
    expect(Protocol.decode(Protocol.encode(["call", 1, "trace", ["t"]]))).toEqual(["call", 1, "trace", ["t"]])
    expect(() => Protocol.unpackByteStrings(Protocol.encode(["ping", { state: "up" } as never]))).toThrow(
      /not a list of byte strings/
    )
    expect(() => Protocol.countByteStrings(Protocol.encode(["ping", { state: "up" } as never]))).toThrow(
      /not a list of byte strings/
    )
  })
})

describe("EndpointSlices", () => {
  it("makes members of ready endpoints: pod DNS names where they have a hostname, else IP:port", () => {
    const service = { namespace: "iii-system", name: "iii-obs" }
    const slices = [
      {
        addressType: "IPv4",
        ports: [
          { name: "metrics", port: 9 },
          { name: "http", port: 4320 }
        ],
        endpoints: [
          { addresses: ["10.1.0.5"], hostname: "iii-obs-0", conditions: { ready: true } },
          { addresses: ["10.1.0.6"], hostname: "iii-obs-1", conditions: { ready: false } },
          { addresses: ["10.1.0.7"], conditions: {} }
        ]
      },
      { addressType: "IPv6", ports: [{ port: 4320 }], endpoints: [{ addresses: ["fd00::8"] }] }
    ]
    expect(addressesOf(service, 4320, slices)).toEqual([
      "10.1.0.7:4320",
      "[fd00::8]:4320",
      "iii-obs-0.iii-obs.iii-system.svc:4320"
    ])
    // Peers on the TLS listener (client certificates): the port this node advertises, by number.
    const withTls = slices.map((s) => ({ ...s, ports: [...s.ports, { name: "tls", port: 4321 }] }))
    expect(addressesOf(service, 4321, withTls)).toEqual([
      "10.1.0.7:4321",
      "[fd00::8]:4321",
      "iii-obs-0.iii-obs.iii-system.svc:4321"
    ])
    expect(addressesOf(service, 4320, withTls)).toEqual(addressesOf(service, 4320, slices))
  })
})
