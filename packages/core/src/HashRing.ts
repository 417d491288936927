/**
 * A consistent-hash ring: which nodes own a key, with virtual nodes and replication.
 *
 * Every node is placed on a 32-bit ring at `vnodes` pseudo-random points. A key is hashed to `probes`
 * points (multi-probe consistent hashing, Appleton & O'Reilly 2015); each node's distance to the key
 * is the shortest clockwise distance from any probe to any of its points, and the owners are the
 * `replication` nodes with the smallest distances, nearest first.
 *
 * Why probes: with plain vnodes a node's share of keys is a sum of random arc lengths, whose relative
 * spread is about 1/√vnodes (±9% at 128 vnodes), so with 5 nodes one of them is regularly off by more
 * than 10%. Several probes let a point capture keys only from its nearest part of the arc, which
 * evens out the shares (±2% at 128 vnodes and 8 probes) at the cost of a few more binary searches.
 * `probes: 1` is the classic ring.
 *
 * A node's distance to a key depends only on that node and that key, so membership changes move the
 * minimum: adding a node moves only keys the new node now owns, removing one moves only its keys.
 *
 * Rings are immutable values: `add` and `remove` return a new ring, so a ring can be shared between
 * fibers and swapped atomically (e.g. in a `Ref`). Lookups allocate only the returned array.
 *
 * Hashes are MurmurHash3 x86 32-bit of the UTF-8 bytes, so other languages can compute the same
 * placement: node `n`'s point `i` is `murmur3(n, seed = i)`; key probe 0 is `murmur3(key, 0)` and
 * probe `i` is `fmix32(probe0 + i * 0x9e3779b9)`.
 */
import { dual } from "effect/Function"

/** Default virtual nodes per node. */
export const defaultVnodes = 128
/** Default number of owners per key. */
export const defaultReplication = 1
/** Default probes per key. */
export const defaultProbes = 8

export interface Options {
  /** Points per node on the ring; default `defaultVnodes` (128). */
  readonly vnodes?: number
  /** How many distinct owners `owners` returns at most; default `defaultReplication` (1). */
  readonly replication?: number
  /** Hash points per key; default `defaultProbes` (8). 1 gives the classic ring. */
  readonly probes?: number
}

/** An immutable consistent-hash ring; build it with `make`. */
export class HashRing {
  /** Member nodes, sorted. */
  readonly nodes: ReadonlyArray<string>
  readonly vnodes: number
  readonly replication: number
  readonly probes: number
  /** Point positions, ascending. */
  readonly positions: Uint32Array
  /** Index into `nodes` of the node owning each point. */
  readonly pointNodes: Uint32Array
  /** `firstPoint[b]`: index of the first point at or after the start of bucket `b` (top bits). */
  readonly firstPoint: Uint32Array
  readonly bucketShift: number
  /**
   * Per-node distances during one `owners` call, all +Infinity between calls. Lookups are
   * synchronous, so sharing these scratch arrays is safe; they are the only mutable part of a ring.
   */
  readonly distanceScratch: Float64Array
  /** Nodes with a distance during one `owners` call, and the distinct nodes of one probe's walk. */
  readonly touchedScratch: Uint32Array
  readonly seenScratch: Uint32Array

  /** @internal use `make`, `add`, `remove`. */
  constructor(nodes: ReadonlyArray<string>, settings: Required<Options>) {
    this.nodes = nodes
    this.vnodes = settings.vnodes
    this.replication = settings.replication
    this.probes = settings.probes
    const points: Array<{ position: number; node: number }> = []
    nodes.forEach((node, index) => {
      const bytes = utf8(node).slice()
      for (let i = 0; i < settings.vnodes; i++) points.push({ position: murmur3(bytes, i), node: index })
    })
    // Ties (equal positions) break by node order so every process builds the same ring.
    points.sort((a, b) => a.position - b.position || a.node - b.node)
    this.distanceScratch = new Float64Array(nodes.length).fill(Number.POSITIVE_INFINITY)
    this.touchedScratch = new Uint32Array(nodes.length)
    this.seenScratch = new Uint32Array(Math.min(settings.replication, nodes.length))
    this.positions = Uint32Array.from(points, (p) => p.position)
    this.pointNodes = Uint32Array.from(points, (p) => p.node)
    // A bucket index over the top bits, ~4 buckets per point, turns the successor search into a
    // table read plus a short scan: much faster than a binary search's unpredictable branches.
    const bucketBits = Math.min(20, Math.max(4, Math.ceil(Math.log2(points.length * 4 + 1))))
    this.bucketShift = 32 - bucketBits
    this.firstPoint = new Uint32Array(2 ** bucketBits)
    let point = 0
    for (let bucket = 0; bucket < this.firstPoint.length; bucket++) {
      while (point < points.length && (this.positions[point] ?? 0) >>> this.bucketShift < bucket) point++
      this.firstPoint[bucket] = point
    }
  }
}

const positiveInt = (name: string, value: number): number => {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`HashRing: ${name} must be a positive integer, got ${value}`)
  }
  return value
}

/**
 * A ring with the given nodes (duplicates ignored). Throws `RangeError` when `vnodes`, `replication`
 * or `probes` is not a positive integer: those are programming errors, not data.
 */
export const make = (nodes: Iterable<string> = [], options: Options = {}): HashRing =>
  new HashRing([...new Set(nodes)].sort(), {
    vnodes: positiveInt("vnodes", options.vnodes ?? defaultVnodes),
    replication: positiveInt("replication", options.replication ?? defaultReplication),
    probes: positiveInt("probes", options.probes ?? defaultProbes)
  })

const settingsOf = (ring: HashRing): Required<Options> => ({
  vnodes: ring.vnodes,
  replication: ring.replication,
  probes: ring.probes
})

/** The ring with `node` added; the same ring when it is already a member. */
export const add: {
  (node: string): (ring: HashRing) => HashRing
  (ring: HashRing, node: string): HashRing
} = dual(
  2,
  (ring: HashRing, node: string): HashRing =>
    ring.nodes.includes(node) ? ring : new HashRing([...ring.nodes, node].sort(), settingsOf(ring))
)

/** The ring without `node`; the same ring when it is not a member. */
export const remove: {
  (node: string): (ring: HashRing) => HashRing
  (ring: HashRing, node: string): HashRing
} = dual(
  2,
  (ring: HashRing, node: string): HashRing =>
    ring.nodes.includes(node)
      ? new HashRing(
          ring.nodes.filter((n) => n !== node),
          settingsOf(ring)
        )
      : ring
)

/** Index of the first point at or after `position`, wrapping to 0. */
const successor = (ring: HashRing, position: number): number => {
  const { positions } = ring
  let point = ring.firstPoint[position >>> ring.bucketShift] ?? 0
  while (point < positions.length && (positions[point] ?? 0) < position) point++
  return point === positions.length ? 0 : point
}

const probePosition = (first: number, probe: number): number =>
  probe === 0 ? first : fmix32((first + Math.imul(probe, 0x9e3779b9)) | 0)

/**
 * The distinct nodes owning `key`, preferred first: `min(replication, nodes.length)` of them, none
 * for an empty ring. The same key on the same membership always gives the same answer.
 */
export const owners: {
  (key: string | Uint8Array): (ring: HashRing) => ReadonlyArray<string>
  (ring: HashRing, key: string | Uint8Array): ReadonlyArray<string>
} = dual(2, (ring: HashRing, key: string | Uint8Array): ReadonlyArray<string> => {
  const { positions, pointNodes, nodes } = ring
  if (nodes.length === 0) return []
  const first = murmur3(typeof key === "string" ? utf8(key) : key, 0)
  const wanted = Math.min(ring.replication, nodes.length)
  if (wanted === 1) return [nodes[nearestNode(ring, first)] ?? ""]
  // Distance of each node to the key; a probe's walk stops once it has seen `wanted` distinct nodes,
  // because any node not yet seen is farther from that probe than all of those.
  const { distanceScratch: distance, touchedScratch: touched, seenScratch: seen } = ring
  let touchedCount = 0
  for (let probe = 0; probe < ring.probes; probe++) {
    const position = probePosition(first, probe)
    const start = successor(ring, position)
    let seenCount = 0
    for (let step = 0; step < positions.length && seenCount < wanted; step++) {
      const point = start + step < positions.length ? start + step : start + step - positions.length
      const node = pointNodes[point] ?? 0
      if (includes(seen, seenCount, node)) continue
      seen[seenCount++] = node
      const d = ((positions[point] ?? 0) - position) >>> 0
      const known = distance[node] ?? Number.POSITIVE_INFINITY
      if (known === Number.POSITIVE_INFINITY) touched[touchedCount++] = node
      if (d < known) distance[node] = d
    }
  }
  // Partial selection sort: the `wanted` nearest, ties broken by node order.
  const result = new Array<string>(wanted)
  for (let rank = 0; rank < wanted; rank++) {
    let best = rank
    for (let i = rank + 1; i < touchedCount; i++) {
      const candidate = touched[i] ?? 0
      const incumbent = touched[best] ?? 0
      const dc = distance[candidate] ?? 0
      const di = distance[incumbent] ?? 0
      if (dc < di || (dc === di && candidate < incumbent)) best = i
    }
    const chosen = touched[best] ?? 0
    touched[best] = touched[rank] ?? 0
    touched[rank] = chosen
    result[rank] = nodes[chosen] ?? ""
  }
  for (let i = 0; i < touchedCount; i++) distance[touched[i] ?? 0] = Number.POSITIVE_INFINITY
  return result
})

const includes = (values: Uint32Array, count: number, value: number): boolean => {
  for (let i = 0; i < count; i++) if (values[i] === value) return true
  return false
}

/** Index of the node nearest to the key's probes (the replication-1 fast path). */
const nearestNode = (ring: HashRing, first: number): number => {
  const { positions, pointNodes } = ring
  let best = -1
  let bestDistance = Number.POSITIVE_INFINITY
  for (let probe = 0; probe < ring.probes; probe++) {
    const position = probePosition(first, probe)
    const point = successor(ring, position)
    const d = ((positions[point] ?? 0) - position) >>> 0
    const node = pointNodes[point] ?? 0
    if (d < bestDistance || (d === bestDistance && node < best)) {
      best = node
      bestDistance = d
    }
  }
  return best
}

/** The preferred owner of `key`, or `undefined` for an empty ring. */
export const owner: {
  (key: string | Uint8Array): (ring: HashRing) => string | undefined
  (ring: HashRing, key: string | Uint8Array): string | undefined
} = dual(2, (ring: HashRing, key: string | Uint8Array): string | undefined =>
  ring.nodes.length === 0
    ? undefined
    : ring.nodes[nearestNode(ring, murmur3(typeof key === "string" ? utf8(key) : key, 0))]
)

const encoder = new TextEncoder()
let scratch = new Uint8Array(256)
/** UTF-8 bytes of `s` in a reused buffer: valid until the next call. */
const utf8 = (s: string): Uint8Array => {
  // 3 bytes per UTF-16 unit is the worst case.
  if (s.length * 3 > scratch.length) scratch = new Uint8Array(s.length * 3)
  const { written } = encoder.encodeInto(s, scratch)
  return scratch.subarray(0, written)
}

const C1 = 0xcc9e2d51
const C2 = 0x1b873593

const mixBlock = (k: number): number => Math.imul((Math.imul(k, C1) << 15) | (Math.imul(k, C1) >>> 17), C2)

/** MurmurHash3's 32-bit finaliser: a fast bijective avalanche of a 32-bit integer. */
export const fmix32 = (input: number): number => {
  let h = input
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** MurmurHash3 x86 32-bit of `bytes` with `seed`, as an unsigned 32-bit integer. */
export const murmur3 = (bytes: Uint8Array, seed = 0): number => {
  let h = seed | 0
  const length = bytes.length
  const blocksEnd = length & ~3
  for (let i = 0; i < blocksEnd; i += 4) {
    const k =
      (bytes[i] ?? 0) | ((bytes[i + 1] ?? 0) << 8) | ((bytes[i + 2] ?? 0) << 16) | ((bytes[i + 3] ?? 0) << 24)
    h ^= mixBlock(k)
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  const rest = length & 3
  if (rest > 0) {
    let k = bytes[blocksEnd] ?? 0
    if (rest > 1) k |= (bytes[blocksEnd + 1] ?? 0) << 8
    if (rest > 2) k |= (bytes[blocksEnd + 2] ?? 0) << 16
    h ^= mixBlock(k)
  }
  return fmix32(h ^ length)
}
