/**
 * Where each record lives: core's `HashRing` over the members, looked up per partition. A record's
 * routing key (a span's trace id, a log's correlation key, a RED part's service, a point's agent) is
 * hashed (MurmurHash3) into one of 2^partitionBits partitions, and each partition's owners are the
 * ring's `replication` nearest members for it, computed once per membership. Every node builds the
 * same placement from the same members and layout.
 *
 * Partitions make a lookup a hash and a table read (no ring walk per span), and give anti-entropy
 * and ring changes a unit; 65,536 of them keep each node's share within a few percent of 1/N up to a
 * few hundred nodes (bench:ring-sim).
 */
import { HashRing } from "@iii/core"

/** What every node of a cluster must agree on; kept with the data (a node refuses another). */
export interface RingLayout {
  /** Owners per record, capped at the number of members. */
  readonly replication: number
  readonly vnodes: number
  readonly probes: number
  readonly partitionBits: number
}

export const defaultRingLayout: RingLayout = {
  replication: 3,
  vnodes: HashRing.defaultVnodes,
  probes: HashRing.defaultProbes,
  partitionBits: 16
}

export const sameLayout = (a: RingLayout, b: RingLayout): boolean =>
  a.replication === b.replication &&
  a.vnodes === b.vnodes &&
  a.probes === b.probes &&
  a.partitionBits === b.partitionBits

export const describeLayout = (l: RingLayout): string =>
  `replication ${l.replication}, ${l.vnodes} vnodes, ${l.probes} probes, 2^${l.partitionBits} partitions`

const encoder = new TextEncoder()
let scratch = new Uint8Array(256)

/** The partition of a routing key. */
export const partitionOf = (key: string, partitionBits: number): number => {
  if (key.length * 3 > scratch.length) scratch = new Uint8Array(key.length * 3)
  const { written } = encoder.encodeInto(key, scratch)
  return HashRing.murmur3(scratch.subarray(0, written)) >>> (32 - partitionBits)
}

export class Placement {
  /** Members, sorted. */
  readonly members: ReadonlyArray<string>
  readonly layout: RingLayout
  /** Owners per record: min(replication, members). */
  readonly replicas: number
  /** Write quorum: a majority of a record's owners. */
  readonly quorum: number
  /** The distinct owner sets, preferred owner first. */
  readonly sets: ReadonlyArray<ReadonlyArray<string>>
  /** Partition → index into `sets`; undefined when there is one set (every member owns everything). */
  readonly setOfPartition: Uint32Array | undefined
  /** Identity of this placement: its members and layout. */
  readonly id: string

  constructor(members: Iterable<string>, layout: RingLayout) {
    this.members = [...new Set(members)].sort()
    this.layout = layout
    this.replicas = Math.min(layout.replication, this.members.length)
    this.quorum = Math.floor(this.replicas / 2) + 1
    this.id = `${this.members.join(",")}|${describeLayout(layout)}`
    if (this.members.length <= layout.replication) {
      this.sets = [this.members]
      this.setOfPartition = undefined
      return
    }
    const ring = HashRing.make(this.members, {
      replication: this.replicas,
      vnodes: layout.vnodes,
      probes: layout.probes
    })
    const sets: Array<ReadonlyArray<string>> = []
    const ids = new Map<string, number>()
    const table = new Uint32Array(2 ** layout.partitionBits)
    for (let p = 0; p < table.length; p++) {
      const owners = HashRing.owners(ring, `partition-${p}`)
      const key = owners.join(",")
      let id = ids.get(key)
      if (id === undefined) {
        id = sets.push(owners) - 1
        ids.set(key, id)
      }
      table[p] = id
    }
    this.sets = sets
    this.setOfPartition = table
  }

  /** Index into `sets` of the owners of a routing key. */
  setOf(key: string): number {
    return this.setOfPartition === undefined
      ? 0
      : (this.setOfPartition[partitionOf(key, this.layout.partitionBits)] ?? 0)
  }

  ownersOf(key: string): ReadonlyArray<string> {
    return this.sets[this.setOf(key)] ?? []
  }

  /** Share of the partitions `node` owns (as any replica), and as the preferred owner. */
  share(node: string): { readonly replica: number; readonly primary: number } {
    if (this.setOfPartition === undefined) {
      const owns = this.members.includes(node)
      return { replica: owns ? 1 : 0, primary: this.members[0] === node ? 1 : 0 }
    }
    const bySet = this.sets.map((s) => ({ replica: s.includes(node), primary: s[0] === node }))
    let replica = 0
    let primary = 0
    for (const set of this.setOfPartition) {
      if (bySet[set]?.replica) replica++
      if (bySet[set]?.primary) primary++
    }
    return { replica: replica / this.setOfPartition.length, primary: primary / this.setOfPartition.length }
  }
}
