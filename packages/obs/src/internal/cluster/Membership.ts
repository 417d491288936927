/**
 * Who is in the cluster and in what state, as this node sees it, and the placements that follow.
 *
 * Members come from a source (the `--peers` list, or the ready endpoints of a Kubernetes Service) plus,
 * with a static list, nodes that joined by saying so (persisted, so a restart keeps them) and minus
 * nodes that left. Each node tells its own state in every hello, ping and pong: `joining` until it
 * and every member have finished moving data for the current placement, `up`, `leaving` while it
 * hands its data over, `left`. Liveness is this node's heartbeat view: a member that does not answer
 * is `down`, still a member (its writes become hints), not a ring change.
 *
 * The write placement is over the members that are neither leaving nor left. A change of it is over
 * in two steps: every member has *settled* (moved its data for it), then every member has *repaired*
 * (finished an anti-entropy pass begun once all had settled, so what a move missed is copied too).
 * Until then reads also ask the owners under the previous placement, which still hold what has not
 * moved yet.
 */
import type { NodeState, Status } from "./PeerProtocol.js"
import { Placement, type RingLayout } from "./Placement.js"

/** A member's state in `/v1/cluster`: what it says of itself, or `down` when it does not answer. */
export type MemberState = NodeState | "down"

export interface MemberView {
  readonly address: string
  readonly state: MemberState
  readonly settled: string
  readonly tail: number
  /** Milliseconds since it was last heard from (0 for this node). */
  readonly silentMs: number
}

interface Known extends Status {
  heard: number
}

export class Membership {
  readonly self: string
  readonly layout: RingLayout
  /** Admitting a node that is not in the source: only a static list does (a joiner says so). */
  readonly admitsJoiners: boolean
  private source = new Set<string>()
  private readonly joined: Set<string>
  private readonly left: Set<string>
  private readonly statuses = new Map<string, Known>()
  private readonly up = new Set<string>()
  selfState: NodeState
  /** The placement this node has finished moving its data for. */
  settled: Placement | undefined
  /** The placement before the current one, kept for reads until every member has repaired. */
  previous: Placement | undefined
  /** The placement this node finished an anti-entropy pass for, after every member had settled on it. */
  repaired: Placement | undefined
  /** When every member that answers was first seen settled on the current placement (0: not yet). */
  stableSince = 0
  private placement: Placement

  constructor(options: {
    readonly self: string
    readonly layout: RingLayout
    readonly source: Iterable<string>
    readonly admitsJoiners: boolean
    readonly joined: Iterable<string>
    readonly left: Iterable<string>
    readonly settled: ReadonlyArray<string> | undefined
  }) {
    this.self = options.self
    this.layout = options.layout
    this.admitsJoiners = options.admitsJoiners
    this.source = new Set(options.source)
    this.joined = new Set(options.joined)
    this.left = new Set(options.left)
    this.selfState = "joining"
    this.settled = options.settled === undefined ? undefined : new Placement(options.settled, options.layout)
    this.placement = this.settled ?? new Placement([], options.layout)
    this.placement = this.placementOf(this.writers())
    this.previous = this.settled ?? this.placement
  }

  /** Every member, this node included, sorted. */
  members(): ReadonlyArray<string> {
    const all = new Set([...this.source, ...this.joined, this.self])
    for (const gone of this.left) if (gone !== this.self) all.delete(gone)
    return [...all].sort()
  }

  /** The members other than this node. */
  peers(): ReadonlyArray<string> {
    return this.members().filter((m) => m !== this.self)
  }

  get current(): Placement {
    return this.placement
  }

  /** The placements a read asks the owners of: the current one, and the previous one while data moves. */
  readPlacements(): ReadonlyArray<Placement> {
    return this.previous === undefined || this.previous.id === this.placement.id
      ? [this.placement]
      : [this.placement, this.previous]
  }

  /** Recomputes the placement; true when it changed. */
  private refresh(): boolean {
    const writers = this.writers()
    if (writers.join(",") === this.placement.members.join(",")) return false
    this.previous = this.converged() ? this.placement : (this.previous ?? this.placement)
    this.placement = this.placementOf(writers)
    this.stableSince = 0
    return true
  }

  /** The members that take writes: neither leaving nor left. */
  private writers(): ReadonlyArray<string> {
    return this.members().filter((m) => {
      const state = m === this.self ? this.selfState : this.statuses.get(m)?.state
      return state !== "leaving" && state !== "left"
    })
  }

  /** Placements are built once per member list (a table of 65,536 owner lookups). */
  private placementOf(members: ReadonlyArray<string>): Placement {
    for (const known of [this.placement, this.previous, this.settled, this.repaired])
      if (known !== undefined && known.members.join(",") === members.join(",")) return known
    return new Placement(members, this.layout)
  }

  isMember(node: string): boolean {
    return this.members().includes(node)
  }

  /** Replaces the source's members (a new EndpointSlice view); true when the placement changed. */
  setSource(members: Iterable<string>): boolean {
    this.source = new Set(members)
    return this.refresh()
  }

  /** A node not yet a member says it joins: admitted when a static list is the source. */
  admit(node: string): boolean {
    if (!this.admitsJoiners) return false
    this.left.delete(node)
    this.joined.add(node)
    this.refresh()
    return true
  }

  get joiners(): ReadonlyArray<string> {
    return [...this.joined]
  }

  get leavers(): ReadonlyArray<string> {
    return [...this.left]
  }

  /** A member's status from its hello, ping or pong; true when the placement changed. */
  noteStatus(node: string, status: Status): boolean {
    this.statuses.set(node, { ...status, heard: Date.now() })
    // A node that knows of no other placement learns the one a member settled on (it holds data there).
    if (
      this.previous?.id === this.placement.id &&
      status.settled !== "" &&
      status.settled !== this.placement.id
    ) {
      const members = status.settled.split("|")[0]?.split(",") ?? []
      if (members.join(",") !== this.placement.members.join(",")) this.previous = this.placementOf(members)
    }
    if (status.state === "left") {
      this.joined.delete(node)
      this.left.add(node)
    } else if (status.state === "joining" && this.left.has(node) && this.admitsJoiners) {
      this.left.delete(node)
      this.joined.add(node)
    }
    return this.refresh()
  }

  setLive(node: string, live: boolean): void {
    if (live) this.up.add(node)
    else this.up.delete(node)
  }

  isUp(node: string): boolean {
    return node === this.self || this.up.has(node)
  }

  setSelfState(state: NodeState): boolean {
    this.selfState = state
    return this.refresh()
  }

  /** This node finished moving data for the current placement. */
  settle(): void {
    this.settled = this.placement
  }

  /** Every member that answers has settled on the current placement (and this node too). */
  stable(): boolean {
    const id = this.placement.id
    const stable =
      this.settled?.id === id &&
      this.placement.members.every(
        (m) => m === this.self || !this.up.has(m) || this.statuses.get(m)?.settled === id
      )
    if (!stable) this.stableSince = 0
    else if (this.stableSince === 0) this.stableSince = Date.now()
    return stable
  }

  /**
   * Every member has been heard from and has settled on the current placement, and every one that
   * answers has repaired it too: what the move missed has been copied, reads need the new owners only.
   */
  converged(): boolean {
    const id = this.placement.id
    return (
      this.stable() &&
      this.repaired?.id === id &&
      this.placement.members.every(
        (m) =>
          m === this.self ||
          (this.statuses.get(m)?.settled === id && (!this.up.has(m) || this.statuses.get(m)?.repaired === id))
      )
    )
  }

  /** Forgets the previous placement once the cluster has converged on the current one; true when it did. */
  settleReads(): boolean {
    if (!this.converged() || this.previous?.id === this.placement.id) return false
    this.previous = this.placement
    return true
  }

  /** Every member has been heard from since this node started (a joiner is up only then). */
  heardFromAll(): boolean {
    return this.placement.members.every((m) => m === this.self || this.statuses.has(m))
  }

  status(tail: number): Status {
    return {
      state: this.selfState,
      settled: this.settled?.id ?? "",
      repaired: this.repaired?.id ?? "",
      tail
    }
  }

  view(): ReadonlyArray<MemberView> {
    const now = Date.now()
    const leaving = [...this.left].filter((m) => this.statuses.get(m)?.state === "leaving")
    return [...new Set([...this.members(), ...leaving])].map((address) => {
      if (address === this.self)
        return { address, state: this.selfState, settled: this.settled?.id ?? "", tail: 0, silentMs: 0 }
      const known = this.statuses.get(address)
      return {
        address,
        state: this.up.has(address) ? (known?.state ?? "joining") : "down",
        settled: known?.settled ?? "",
        tail: this.up.has(address) ? (known?.tail ?? 0) : 0,
        silentMs: known === undefined ? -1 : now - known.heard
      }
    })
  }

  /** Peers that are up and have tail subscribers. */
  tailing(): ReadonlyArray<string> {
    return this.peers().filter((p) => this.up.has(p) && (this.statuses.get(p)?.tail ?? 0) > 0)
  }
}
