import { pipe } from "effect"
import { describe, expect, it } from "vitest"
import * as HashRing from "../src/HashRing.js"
import { prng } from "./fixtures/prng.js"

const keyCount = 100_000
const traceIds = (seed: number) => {
  const random = prng(seed)
  return Array.from({ length: keyCount }, () => random.hex(16))
}
const keys = traceIds(42)
const fiveNodes = ["obs-0", "obs-1", "obs-2", "obs-3", "obs-4"]

const shares = (ring: HashRing.HashRing, keys: ReadonlyArray<string>) => {
  const counts = new Map<string, number>(ring.nodes.map((node) => [node, 0]))
  for (const key of keys) {
    const owner = HashRing.owner(ring, key)
    if (owner !== undefined) counts.set(owner, (counts.get(owner) ?? 0) + 1)
  }
  return counts
}

const expectBalanced = (ring: HashRing.HashRing) => {
  const fair = keyCount / ring.nodes.length
  for (const [node, count] of shares(ring, keys)) {
    expect(Math.abs(count - fair) / fair, `${node} owns ${count} of ${keyCount}`).toBeLessThanOrEqual(0.1)
  }
}

describe("HashRing", () => {
  it("hashes with MurmurHash3 x86 32-bit (reference vectors)", () => {
    const bytes = (s: string) => new TextEncoder().encode(s)
    expect(HashRing.murmur3(bytes(""), 0)).toBe(0)
    expect(HashRing.murmur3(bytes(""), 1)).toBe(0x514e28b7)
    expect(HashRing.murmur3(bytes("hello"), 0)).toBe(0x248bfa47)
    expect(HashRing.murmur3(bytes("Hello, world!"), 1234)).toBe(0xfaf6cdb3)
    expect(HashRing.murmur3(bytes("The quick brown fox jumps over the lazy dog"), 0)).toBe(0x2e4ff723)
  })

  it("balances 100,000 keys over 5 nodes with 128 vnodes: each within ±10% of a fifth", () => {
    const ring = HashRing.make(fiveNodes)
    expect(ring.vnodes).toBe(128)
    expectBalanced(ring)
  })

  it("stays balanced whatever the node names are (20 random 5-node memberships)", () => {
    const random = prng(7)
    for (let trial = 0; trial < 20; trial++) {
      expectBalanced(HashRing.make(Array.from({ length: 5 }, () => `obs-${random.hex(4)}`)))
    }
  })

  it("adding a 6th node moves only keys the new node takes, about a sixth of them", () => {
    const before = HashRing.make(fiveNodes)
    const after = HashRing.add(before, "obs-5")
    let moved = 0
    let movedElsewhere = 0
    for (const key of keys) {
      const now = HashRing.owner(after, key)
      if (HashRing.owner(before, key) !== now) {
        moved++
        if (now !== "obs-5") movedElsewhere++
      }
    }
    expect(movedElsewhere).toBe(0)
    expect(moved).toBeGreaterThan(0)
    expect(moved / keyCount).toBeLessThanOrEqual(1 / 6 + 0.05)
  })

  it("removing a node moves only that node's keys", () => {
    const before = HashRing.make(fiveNodes)
    const after = HashRing.remove(before, "obs-2")
    let moved = 0
    let movedOthers = 0
    for (const key of keys) {
      const old = HashRing.owner(before, key)
      if (old === "obs-2") moved++
      else if (HashRing.owner(after, key) !== old) movedOthers++
    }
    expect(movedOthers).toBe(0)
    expect(after.nodes).not.toContain("obs-2")
    expect(moved).toBeGreaterThan(0)
  })

  it("with replication, membership changes only insert or drop the changed node in each owner list", () => {
    const five = HashRing.make(fiveNodes, { replication: 3 })
    const six = HashRing.add(five, "obs-5")
    const four = HashRing.remove(five, "obs-0")
    for (const key of keys.slice(0, 10_000)) {
      const owners = HashRing.owners(five, key)
      expect(HashRing.owners(six, key).filter((n) => n !== "obs-5")).toEqual(
        owners.slice(0, HashRing.owners(six, key).includes("obs-5") ? 2 : 3)
      )
      const withoutRemoved = owners.filter((n) => n !== "obs-0")
      expect(HashRing.owners(four, key).slice(0, withoutRemoved.length)).toEqual(withoutRemoved)
    }
  })

  it("returns distinct owners, preferred first, the same for the same membership in any order", () => {
    const ring = HashRing.make(fiveNodes, { replication: 3 })
    const shuffled = HashRing.make([...fiveNodes].reverse(), { replication: 3 })
    for (const key of keys.slice(0, 10_000)) {
      const owners = HashRing.owners(ring, key)
      expect(owners).toHaveLength(3)
      expect(new Set(owners).size).toBe(3)
      expect(owners[0]).toBe(HashRing.owner(ring, key))
      expect(HashRing.owners(shuffled, key)).toEqual(owners)
      expect(HashRing.owners(ring, key)).toEqual(owners)
    }
  })

  it("spreads replicas too: each node is among the 3 owners of about 3/5 of the keys", () => {
    const ring = HashRing.make(fiveNodes, { replication: 3 })
    const counts = new Map<string, number>()
    for (const key of keys)
      for (const n of HashRing.owners(ring, key)) counts.set(n, (counts.get(n) ?? 0) + 1)
    for (const node of fiveNodes) {
      expect(Math.abs((counts.get(node) ?? 0) / keyCount - 3 / 5)).toBeLessThanOrEqual(0.06)
    }
  })

  it("hashes a string key as its UTF-8 bytes", () => {
    const ring = HashRing.make(fiveNodes, { replication: 2 })
    for (const key of ["trace-ü-1", "ascii", "日本語", ""]) {
      expect(HashRing.owners(ring, new TextEncoder().encode(key))).toEqual(HashRing.owners(ring, key))
    }
  })

  it("returns every node when the replication factor exceeds the node count", () => {
    const ring = HashRing.make(["a", "b"], { replication: 5 })
    for (const key of keys.slice(0, 100)) expect([...HashRing.owners(ring, key)].sort()).toEqual(["a", "b"])
  })

  it("owns nothing when empty, and adding/removing round-trips", () => {
    const empty = HashRing.make()
    expect(HashRing.owners(empty, "k")).toEqual([])
    expect(HashRing.owner(empty, "k")).toBeUndefined()
    const one = HashRing.add(empty, "only")
    expect(HashRing.owners(one, "k")).toEqual(["only"])
    expect(HashRing.remove(one, "only").nodes).toEqual([])
  })

  it("is immutable: add of a member and remove of a stranger return the same ring", () => {
    const ring = HashRing.make(fiveNodes)
    expect(HashRing.add(ring, "obs-1")).toBe(ring)
    expect(HashRing.remove(ring, "nope")).toBe(ring)
    const bigger = pipe(ring, HashRing.add("obs-9"))
    expect(ring.nodes).toEqual(fiveNodes)
    expect(bigger.nodes).toContain("obs-9")
  })

  it("rejects settings that are not positive integers", () => {
    expect(() => HashRing.make([], { vnodes: 0 })).toThrow(RangeError)
    expect(() => HashRing.make([], { replication: 1.5 })).toThrow(RangeError)
    expect(() => HashRing.make([], { probes: -1 })).toThrow(RangeError)
  })
})
