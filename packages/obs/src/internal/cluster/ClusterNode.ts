/**
 * One node of an obs cluster: the ring router in front of the node's own store. It implements the
 * store interfaces (`Store.ts`) the node serves from:
 *
 * - writes: each batch is planned once per owner set (`plan`), each owner set's plan goes to its
 *   owners in parallel (this node's own share into its local group commit), and the batch is
 *   acknowledged once a write quorum of every owner set has it durably; a share an owner could not
 *   take is kept as a durable hint here and handed off when it answers again;
 * - reads: a key's owners (trace by id, a service's RED, a correlation key's logs) or every member
 *   (search, services, correlation) are asked in parallel and their answers merged; what could not
 *   be reached goes to the request's read report (`partial`, `missing`);
 * - the peer endpoint, heartbeats (`PeerLink`), the cluster-wide tail, and the background work of
 *   `Maintenance.ts` (hinted handoff, data moves on ring changes, anti-entropy).
 */
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import type { Telemetry } from "@iii/core"
import { Errors } from "@iii/core"
import { Effect, Either, FiberRef } from "effect"
import { StoreError, type UnindexableSpan } from "../../Errors.js"
import type { LocalTail, NodeParts } from "../../ObsNode.js"
import {
  type BatchWriterService,
  currentReadReport,
  type IngestBatch,
  logKeyOf,
  type PlannedBatch,
  type RecordEntry,
  type RecordOwners,
  type RedPart,
  type ReplicaService,
  type SpanReaderService,
  type StoreMaintenanceService,
  type WriteOutcome
} from "../../Store.js"
import { GroupCommit } from "../node/GroupCommit.js"
import {
  authorized,
  closeFirmly,
  helloDeadline,
  peerCertificateVerified,
  SocketEndpoint
} from "../node/SocketRules.js"
import { sampleRed } from "../RedParts.js"
import type { Membership } from "./Membership.js"
import * as Merge from "./Merge.js"
import { PeerLink, type PeerTls, PeerUnavailable } from "./PeerLink.js"
import * as Protocol from "./PeerProtocol.js"
import { type Placement, type RingLayout, sameLayout } from "./Placement.js"

export interface ClusterSettings {
  /** This node's address as the others reach it, HOST:PORT. */
  readonly self: string
  readonly layout: RingLayout
  /** The cluster token peers authenticate with (the node's own token). */
  readonly token: string | undefined
  /**
   * With a client CA: peers talk over TLS, and a peer whose client certificate that CA signed is
   * admitted without the token.
   */
  readonly tls: PeerTls | undefined
  /** Peer connections this node takes at once (`/v1/peer`); more are answered 503. */
  readonly maxPeerConnections: number
  readonly layoutVersion: number
  /** Milliseconds between heartbeats. */
  readonly heartbeatInterval: number
  /** Milliseconds without an answer after which a peer is down. */
  readonly heartbeatTimeout: number
  /** Milliseconds between anti-entropy passes. */
  readonly repairInterval: number
}

/** The node's own store, under the router. */
export interface LocalStore {
  readonly writer: BatchWriterService
  readonly reader: SpanReaderService
  readonly maintenance: StoreMaintenanceService
  readonly replica: ReplicaService
}

/** A batch as the router plans it: one plan of the local store per owner set. */
export interface ClusterPlan extends PlannedBatch {
  /** The placement the owner sets come from: the batch is refused if it changed before the write. */
  readonly placement: string
  readonly groups: ReadonlyArray<{ readonly owners: ReadonlyArray<string>; readonly plan: PlannedBatch }>
}

/**
 * A write to a peer: the placement its plans were planned for ("" for hints, always taken); the
 * plans are the call's bulk (`Protocol.packByteStrings`).
 */
interface WriteCall {
  readonly placement: string
}

export class ClusterCounters {
  writesUnavailable = 0
  hintsStored = 0
  hintsHandedOff = 0
  readsPartial = 0
  repairPasses = 0
  repairMinutesCompared = 0
  repairMinutesMismatched = 0
  repairRecordsCopied = 0
  repairLastPassAt = 0
  movedRecords = 0
  movedBytes = 0
  movesCompleted = 0
}

const weightOf = (p: PlannedBatch) => p.spanCount + p.logCount + p.metricCount + 1

const run = <A>(effect: Effect.Effect<A, StoreError>): Promise<A> => Effect.runPromise(effect)

/** Counts a batch's acknowledgements per owner set; settles once every set has a quorum, or one cannot. */
class Quorum {
  private readonly acks: Array<number>
  private readonly fails: Array<number>
  private stored = false
  private settled = false
  readonly done: Promise<WriteOutcome>
  private resolve: (o: WriteOutcome) => void = () => undefined

  private readonly sizes: ReadonlyArray<number>

  constructor(sizes: ReadonlyArray<number>) {
    this.sizes = sizes
    this.acks = sizes.map(() => 0)
    this.fails = sizes.map(() => 0)
    this.done = new Promise((r) => {
      this.resolve = r
    })
    this.check()
  }

  ack(group: number, outcome: WriteOutcome): void {
    if (outcome === "unavailable") {
      this.fail(group)
      return
    }
    if (outcome === "stored") this.stored = true
    this.acks[group] = (this.acks[group] ?? 0) + 1
    this.check()
  }

  /** Settles as unavailable at once; false, for use in a filter. */
  refuse(): boolean {
    if (!this.settled) {
      this.settled = true
      this.resolve("unavailable")
    }
    return false
  }

  fail(group: number): void {
    this.fails[group] = (this.fails[group] ?? 0) + 1
    this.check()
  }

  private check(): void {
    if (this.settled) return
    const need = (size: number) => Math.floor(size / 2) + 1
    if (this.sizes.every((size, g) => (this.acks[g] ?? 0) >= need(size))) {
      this.settled = true
      this.resolve(this.stored ? "stored" : "duplicate")
    } else if (this.sizes.some((size, g) => (this.fails[g] ?? 0) > size - need(size))) {
      this.settled = true
      this.resolve("unavailable")
    }
  }
}

const zeros = new Uint16Array(0)

/** Write calls a peer may have unanswered before its shares become hints. */
const maxWriteBacklog = 8

/** The owners of each record of a share, for the digests: one set, all records in it. */
const oneSet = (owners: ReadonlyArray<string>): RecordOwners => ({
  sets: [owners],
  spans: zeros,
  logs: zeros,
  metrics: zeros,
  red: zeros
})

/**
 * A batch (or exported records) split into one share per owner set: spans by trace id, logs by
 * correlation key, metric points by agent, RED parts by service (sampled from the spans when the
 * batch has none yet), each share with its owners for the digests.
 */
const splitByOwners = (
  placement: Placement,
  batch: IngestBatch
): Array<{ readonly owners: ReadonlyArray<string>; readonly share: IngestBatch }> => {
  const shares = new Map<number, Mutable>()
  const at = (set: number): Mutable => {
    let s = shares.get(set)
    if (s === undefined) {
      s = { spans: [], logs: [], logIndexes: [], metrics: [], metricIndexes: [], red: [] }
      shares.set(set, s)
    }
    return s
  }
  for (const span of batch.spans) at(placement.setOf(span.traceId)).spans.push(span)
  batch.logs.forEach((log, i) => {
    const s = at(placement.setOf(logKeyOf(log)))
    s.logs.push(log)
    s.logIndexes.push(batch.logIndexes?.[i] ?? i)
  })
  batch.metrics.forEach((point, i) => {
    const s = at(placement.setOf(batch.agentId))
    s.metrics.push(point)
    s.metricIndexes.push(batch.metricIndexes?.[i] ?? i)
  })
  for (const part of batch.red ?? sampleRed(batch.spans)) at(placement.setOf(part.service)).red.push(part)
  return Array.from(shares, ([set, s]) => {
    const owners = placement.sets[set] ?? []
    return { owners, share: { agentId: batch.agentId, seq: batch.seq, ...s, peers: oneSet(owners) } }
  })
}

/** A share being filled, record by record. */
interface Mutable {
  readonly spans: Array<Telemetry.Span>
  readonly logs: Array<Telemetry.LogRecord>
  readonly logIndexes: Array<number>
  readonly metrics: Array<Telemetry.MetricPoint>
  readonly metricIndexes: Array<number>
  readonly red: Array<RedPart>
}

export class ClusterNode {
  readonly settings: ClusterSettings
  readonly local: LocalStore
  readonly membership: Membership
  readonly counters = new ClusterCounters()
  readonly links = new Map<string, PeerLink>()
  /** This node's share of every write (its own and the other coordinators'), group-committed. */
  readonly queue: GroupCommit<PlannedBatch>
  private readonly log: (level: "info" | "warn", message: string) => void
  private tail: LocalTail = { publish: () => undefined, subscribers: () => 0 }
  /** `/v1/peer`, under the node's socket rules once the node lends them (`attach`). */
  private endpoint: SocketEndpoint | undefined
  /** Called when membership or a member's state changed (the maintenance loop reacts). */
  onChange: () => void = () => undefined

  constructor(
    settings: ClusterSettings,
    local: LocalStore,
    membership: Membership,
    log: (level: "info" | "warn", message: string) => void
  ) {
    this.settings = settings
    this.local = local
    this.membership = membership
    this.log = log
    this.queue = new GroupCommit<PlannedBatch>({
      write: (round) => run(local.writer.writeRound(round)),
      committed: () => undefined,
      maxQueuedSpans: 100_000,
      maxSpansPerCommit: 8_000,
      maxInFlight: 2
    })
    this.syncLinks()
  }

  get self(): string {
    return this.settings.self
  }

  // ---- peers ------------------------------------------------------------------------------------

  /** Dials every member not yet dialled; closes links to nodes no longer members. */
  syncLinks(): void {
    const peers = new Set(this.membership.peers())
    for (const [address, link] of this.links)
      if (!peers.has(address)) {
        link.close()
        this.links.delete(address)
        this.membership.setLive(address, false)
      }
    for (const address of peers)
      if (!this.links.has(address))
        this.links.set(
          address,
          new PeerLink(address, {
            token: this.settings.token,
            tls: this.settings.tls,
            heartbeatInterval: this.settings.heartbeatInterval,
            heartbeatTimeout: this.settings.heartbeatTimeout,
            hello: () => this.hello(),
            status: () => this.membership.status(this.tail.subscribers()),
            onStatus: (peer, status) => this.noteStatus(peer, status),
            onLiveness: (peer, up) => {
              this.membership.setLive(peer, up)
              this.log(up ? "info" : "warn", `peer ${peer} is ${up ? "up" : "down"}`)
              this.onChange()
            },
            onProblem: (peer, reason) => this.log("warn", `peer ${peer} ${reason}`)
          })
        )
  }

  private hello(): Protocol.Hello {
    return {
      node: this.self,
      layout: this.settings.layout,
      layoutVersion: this.settings.layoutVersion,
      ...this.membership.status(this.tail.subscribers())
    }
  }

  noteStatus(peer: string, status: Protocol.Status): void {
    if (this.membership.noteStatus(peer, status)) {
      this.syncLinks()
      this.onChange()
    }
  }

  /**
   * Takes the node's tail (for spans acknowledged elsewhere), and opens `/v1/peer` under the node's
   * socket rules: its token (or, with a client CA, a client certificate it signed: either suffices),
   * a cap, the hello deadline, pings.
   */
  attach({ tail, sockets }: NodeParts): void {
    this.tail = tail
    const token = sockets.rules.token
    const certificates = this.settings.tls !== undefined
    this.endpoint = new SocketEndpoint({
      // Open only when neither is configured; a certificate can only come over the TLS listener.
      authenticate: (req) =>
        (token === undefined && !certificates) ||
        (token !== undefined && authorized(token, req)) ||
        (certificates && peerCertificateVerified(req)),
      name: "peer",
      // `refused`: a hello from a node that is not a member, or with another ring layout.
      closeReasons: ["hello_timeout", "ping_timeout", "refused"],
      maxConnections: this.settings.maxPeerConnections,
      // A write call carries a round's plans; a data move or repair sends records in batches.
      maxPayload: 256 * 1024 * 1024,
      rules: sockets.rules,
      counters: sockets.counters
    })
  }

  /** Open peer connections (dialled by the others). */
  get peerConnections(): number {
    return this.endpoint?.size ?? 0
  }

  /**
   * Takes `/v1/peer` upgrades as the node takes its own: the token or certificate (401 without) and the cap (503)
   * first, then the peer's hello within the deadline, which says who it is.
   */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    if (new URL(req.url ?? "/", "http://node").pathname !== Protocol.path) return false
    // Set before the node listens, so always there by the time an upgrade arrives.
    const endpoint = this.endpoint
    if (endpoint === undefined) return false
    if (!endpoint.admit(req, socket)) return true
    endpoint.complete(req, socket, head, (ws) => {
      let peer: string | undefined
      const send = (frame: Protocol.PeerFrame) => {
        if (ws.readyState === ws.OPEN) ws.send(Protocol.encode(frame))
      }
      const refuse = (reason: string) => {
        send(["refused", reason])
        closeFirmly(ws, 1008, reason.slice(0, 120))
      }
      const said = helloDeadline(ws, endpoint.rules.helloTimeoutMs, () => {
        endpoint.closed("hello_timeout")
        refuse(`no hello within ${endpoint.rules.helloTimeoutMs} ms`)
      })
      ws.on("error", () => ws.terminate())
      ws.on("message", (data: Buffer) => {
        const frame = Protocol.decode(data)
        if (frame === undefined) return refuse("not a peer frame")
        if (frame[0] === "hello") {
          said()
          const hello = frame[1]
          const why = this.refusal(hello)
          if (why !== undefined) {
            this.log("warn", `refused peer ${hello.node}: ${why}`)
            endpoint.closed("refused")
            return refuse(why)
          }
          peer = hello.node
          this.noteStatus(peer, hello)
          return send(["welcome", { node: this.self, ...this.membership.status(this.tail.subscribers()) }])
        }
        if (peer === undefined) return refuse("hello first")
        switch (frame[0]) {
          case "ping":
            this.noteStatus(peer, frame[1])
            return send(["pong", this.membership.status(this.tail.subscribers())])
          case "call": {
            const [, id, op, args, bulk] = frame
            // A full local queue stops reading this peer's writes: back-pressure on its coordinator.
            if (op === "write" && this.queue.full) {
              ws.pause()
              this.queue.onRoom(() => ws.resume())
            }
            this.answer(op, args, bulk).then(
              (value) => send(["reply", id, value]),
              (e: unknown) => send(["fail", id, Errors.messageOf(e)])
            )
            return
          }
          case "tail": {
            const [spans, at] = frame[1] as [ReadonlyArray<Telemetry.Span>, number]
            if (this.tail.subscribers() > 0) this.tail.publish(spans, at)
            return
          }
          default:
            return refuse(`unexpected ${frame[0]} frame`)
        }
      })
    })
    return true
  }

  /** Why a hello is refused; undefined when the peer is welcome. */
  private refusal(hello: Protocol.Hello): string | undefined {
    if (hello.layoutVersion !== this.settings.layoutVersion)
      return `it stores layout version ${hello.layoutVersion}; this node stores ${this.settings.layoutVersion}`
    if (!sameLayout(hello.layout, this.settings.layout))
      return `its ring layout differs (replication ${hello.layout.replication}, vnodes ${hello.layout.vnodes}, probes ${hello.layout.probes}, 2^${hello.layout.partitionBits} partitions; this node: replication ${this.settings.layout.replication}, vnodes ${this.settings.layout.vnodes}, probes ${this.settings.layout.probes}, 2^${this.settings.layout.partitionBits} partitions)`
    if (hello.node === this.self) return "it has this node's own address"
    if (this.membership.isMember(hello.node)) return undefined
    if (hello.state === "joining" && this.membership.admit(hello.node)) {
      this.log("info", `peer ${hello.node} joins the cluster`)
      this.syncLinks()
      this.onChange()
      return undefined
    }
    return `unknown peer ${hello.node}: not a member of this cluster`
  }

  /** What a peer's call asks of this node. */
  private async answer(op: string, args: unknown, bulk: Uint8Array | undefined): Promise<unknown> {
    const a = args as ReadonlyArray<unknown>
    const { reader, replica } = this.local
    switch (op) {
      case "write": {
        // A write planned under another placement than this node's would land where the data moves
        // do not look: refused, the coordinator counts it as a failure (and the agent resends).
        const { placement } = args as WriteCall
        if (placement !== "" && placement !== this.membership.current.id)
          throw new Error("the placement changed: this node has another member list")
        if (bulk === undefined) throw new Error("a write call without its plans")
        return Promise.all(
          this.writeLocal(Protocol.unpackByteStrings(bulk).map((bytes) => this.local.writer.decode(bytes)))
        )
      }
      case "trace":
        return run(reader.trace(a[0] as string))
      case "search":
        return run(reader.searchTraces(a[0] as Parameters<SpanReaderService["searchTraces"]>[0]))
      case "correlated":
        return run(reader.correlatedTraceIds(a[0] as string, a[1] as number))
      case "logs":
        return run(reader.logs(a[0] as string, a[1] as number))
      case "red":
        return run(reader.red(a[0] as string, a[1] as string | undefined, a[2] as number, a[3] as number))
      case "services":
        return run(reader.services())
      case "digests":
        return run(replica.digests(a[0] as string))
      case "records":
        return (await this.recordsFor(a[0] as number, a[1] as number, a[2] as string)).map((r) => [
          r.id,
          r.hash
        ])
      case "export":
        return run(replica.exportRecords(a as ReadonlyArray<string>))
      case "import":
        return this.importRecords(args as Uint8Array)
      default:
        throw new Error(`unknown call ${op}`)
    }
  }

  // ---- writes -----------------------------------------------------------------------------------

  /** Queues plans for this node's store together, so they share a transaction. */
  writeLocal(plans: ReadonlyArray<PlannedBatch>): Array<Promise<WriteOutcome>> {
    return this.queue.submitAllPrepared(
      plans.map((plan) => ({ prepared: plan, spans: plan.spanCount, weight: weightOf(plan) }))
    )
  }

  plan(batch: IngestBatch): Either.Either<ClusterPlan, UnindexableSpan> {
    const placement = this.membership.current
    const counts = {
      spanCount: batch.spans.length,
      logCount: batch.logs.length,
      metricCount: batch.metrics.length,
      placement: placement.id
    }
    const only = placement.sets.length === 1 ? placement.sets[0] : undefined
    if (only !== undefined)
      return Either.map(this.local.writer.plan({ ...batch, peers: oneSet(only) }), (plan) => ({
        ...counts,
        groups: [{ owners: only, plan }]
      }))
    const groups: Array<{ owners: ReadonlyArray<string>; plan: PlannedBatch }> = []
    for (const { owners, share } of splitByOwners(placement, batch)) {
      const planned = this.local.writer.plan(share)
      if (Either.isLeft(planned)) return Either.left(planned.left)
      groups.push({ owners, plan: planned.right })
    }
    return Either.right({ ...counts, groups })
  }

  /**
   * Sends each owner set's plan to its owners and settles each batch at its quorum. Shares that an
   * owner did not take are kept as hints once the batch is acknowledged.
   */
  async writeRound(round: ReadonlyArray<ClusterPlan>): Promise<ReadonlyArray<WriteOutcome>> {
    const current = this.membership.current.id
    const quorums = round.map((p) => new Quorum(p.groups.map((g) => g.owners.length)))
    // Planned under a placement this node has left since: not written (the agent sends it again).
    const live = round.map((p, b) => p.placement === current || (quorums[b]?.refuse() ?? false))
    const toNode = new Map<string, Array<readonly [number, number]>>()
    round.forEach((p, b) => {
      if (!live[b]) return
      p.groups.forEach((g, gi) => {
        for (const owner of g.owners) {
          const items = toNode.get(owner) ?? []
          items.push([b, gi])
          toNode.set(owner, items)
        }
      })
    })
    // Encoded before the local share is written: writing hands its buffers to the writer thread.
    const encoded = new Map<PlannedBatch, Uint8Array>()
    const bytesOf = (b: number, g: number) => {
      const plan = round[b]?.groups[g]?.plan as PlannedBatch
      let bytes = encoded.get(plan)
      if (bytes === undefined) {
        bytes = this.local.writer.encode(plan)
        encoded.set(plan, bytes)
      }
      return bytes
    }
    // One bulk per distinct share list: with as many members as replicas, every peer gets the same.
    const bulks = new Map<string, Uint8Array>()
    const bulkOf = (items: ReadonlyArray<readonly [number, number]>) => {
      const key = items.join(";")
      let bulk = bulks.get(key)
      if (bulk === undefined) {
        bulk = Protocol.packByteStrings(items.map(([b, g]) => bytesOf(b, g)))
        bulks.set(key, bulk)
      }
      return bulk
    }
    const remote = Array.from(toNode).filter(([node]) => node !== this.self)
    const payloads = new Map(remote.map(([node, items]) => [node, bulkOf(items)]))
    for (const [node, items] of toNode) {
      if (node === this.self) {
        this.writeLocal(items.map(([b, g]) => round[b]?.groups[g]?.plan as PlannedBatch)).forEach(
          (written, i) => {
            const [b, g] = items[i] as readonly [number, number]
            written.then(
              (outcome) => quorums[b]?.ack(g, outcome),
              () => quorums[b]?.fail(g)
            )
          }
        )
        continue
      }
      const link = this.links.get(node)
      const payload = payloads.get(node) as Uint8Array
      // An owner that has not taken this node's last writes yet (a slow disk) gets hints instead, so
      // neither side holds an unbounded backlog.
      const sent =
        link === undefined
          ? Promise.reject(new PeerUnavailable(node, "is not a member"))
          : link.backlog >= maxWriteBacklog
            ? Promise.reject(new PeerUnavailable(node, "is behind"))
            : link
                .whenUp(this.settings.heartbeatTimeout)
                .then(() =>
                  link.call(
                    "write",
                    { placement: current } satisfies WriteCall,
                    this.settings.heartbeatTimeout * 4,
                    payload
                  )
                )
      sent.then(
        (outcomes) =>
          items.forEach(([b, g], i) => {
            quorums[b]?.ack(g, (outcomes as ReadonlyArray<WriteOutcome>)[i] ?? "unavailable")
          }),
        () => {
          for (const [b, g] of items) quorums[b]?.fail(g)
          this.hintAfter(
            node,
            items,
            items.map(([b, g]) => bytesOf(b, g)),
            quorums
          )
        }
      )
    }
    const outcomes = await Promise.all(quorums.map((q) => q.done))
    for (const o of outcomes) if (o === "unavailable") this.counters.writesUnavailable++
    return outcomes
  }

  /** Keeps the shares `node` missed as a hint, for the batches that were acknowledged. */
  private hintAfter(
    node: string,
    items: ReadonlyArray<readonly [number, number]>,
    payload: ReadonlyArray<Uint8Array>,
    quorums: ReadonlyArray<Quorum>
  ): void {
    Promise.all(items.map(([b]) => quorums[b]?.done)).then((outcomes) => {
      const kept = payload.filter((_, i) => outcomes[i] === "stored" || outcomes[i] === "duplicate")
      if (kept.length === 0) return
      run(this.local.replica.putHint(node, Protocol.packByteStrings(kept))).then(
        () => {
          this.counters.hintsStored += kept.length
        },
        (e: unknown) => this.log("warn", `could not keep a hint for ${node}: ${String(e)}`)
      )
    })
  }

  /** Sends the hints kept for each peer that answers again, oldest first. */
  async handOff(): Promise<void> {
    const stats = await run(this.local.replica.hintStats())
    for (const [target, { count }] of stats) {
      const link = this.links.get(target)
      // A node that left: its records have other owners now, whom repair brings up to date.
      if (!this.membership.isMember(target)) {
        const all = await run(this.local.replica.hints(target, count))
        await run(
          this.local.replica.deleteHints(
            target,
            all.map((h) => h.id)
          )
        )
        continue
      }
      if (count === 0 || link === undefined || !link.up) continue
      for (;;) {
        const hints = await run(this.local.replica.hints(target, 16))
        if (hints.length === 0) break
        for (const hint of hints) {
          // A hint is a write's bulk as it was (`packByteStrings`).
          const plans = Protocol.countByteStrings(hint.bytes)
          await link.call(
            "write",
            { placement: "" } satisfies WriteCall,
            this.settings.heartbeatTimeout * 4,
            hint.bytes
          )
          this.counters.hintsHandedOff += plans
        }
        await run(
          this.local.replica.deleteHints(
            target,
            hints.map((h) => h.id)
          )
        )
      }
      this.log("info", `handed off ${count} hints to ${target}`)
    }
  }

  // ---- reads ------------------------------------------------------------------------------------

  /** Asks one node: this one locally, another over its link (failing at once when it is down). */
  private askOne<A>(
    node: string,
    local: () => Effect.Effect<A, StoreError>,
    op: string,
    args: unknown
  ): Effect.Effect<Either.Either<A, StoreError>> {
    if (node === this.self) return Effect.either(local())
    return Effect.either(
      Effect.tryPromise({
        try: async () => {
          const link = this.links.get(node)
          await link?.whenUp(this.settings.heartbeatTimeout)
          return link === undefined || !link.up
            ? Promise.reject(new PeerUnavailable(node, "is down"))
            : (link.call(op, args, this.settings.heartbeatTimeout) as Promise<A>)
        },
        catch: (cause) => new StoreError({ operation: `${op} on ${node}`, cause })
      })
    )
  }

  /**
   * Reports who did not answer, partial when some owner set kept fewer answers than a read needs
   * to see every acknowledged write (owners − write quorum + 1). Fails when nothing answered and
   * this node's own store failed.
   */
  private settle<A>(
    asked: ReadonlyArray<readonly [string, Either.Either<A, StoreError>]>,
    sets: (p: Placement) => ReadonlyArray<ReadonlyArray<string>>
  ): Effect.Effect<ReadonlyArray<A>, StoreError> {
    return Effect.gen(this, function* () {
      const answered = new Set(asked.flatMap(([node, a]) => (Either.isRight(a) ? [node] : [])))
      const local = asked.find(([node]) => node === this.self)?.[1]
      if (answered.size === 0 && local !== undefined && Either.isLeft(local)) return yield* local.left
      const placement = this.membership.current
      const need = placement.replicas - placement.quorum + 1
      const partial = sets(placement).some((s) => s.filter((n) => answered.has(n)).length < need)
      if (partial) this.counters.readsPartial++
      const report = yield* FiberRef.get(currentReadReport)
      if (report !== undefined) {
        for (const [node] of asked) if (!answered.has(node)) report.missing.add(node)
        report.partial ||= partial
      }
      return asked.flatMap(([, a]) => (Either.isRight(a) ? [a.right] : []))
    })
  }

  /** Asks every member (search, services, correlation): each holds part of the data. */
  private askAll<A>(
    local: () => Effect.Effect<A, StoreError>,
    op: string,
    args: unknown
  ): Effect.Effect<ReadonlyArray<A>, StoreError> {
    const nodes = [...new Set(this.membership.readPlacements().flatMap((p) => p.members))]
    return Effect.flatMap(
      Effect.all(
        nodes.map((node) => Effect.map(this.askOne(node, local, op, args), (a) => [node, a] as const)),
        { concurrency: "unbounded" }
      ),
      (asked) => this.settle(asked, (p) => p.sets)
    )
  }

  /**
   * Asks a routing key's owners, a read quorum of them (owners − write quorum + 1, this node first
   * when it owns the key), more when some fail; while data moves, every owner under the old and the
   * new placement.
   */
  private askOwners<A>(
    key: string,
    local: () => Effect.Effect<A, StoreError>,
    op: string,
    args: unknown
  ): Effect.Effect<ReadonlyArray<A>, StoreError> {
    return Effect.gen(this, function* () {
      const placements = this.membership.readPlacements()
      const owners = [...new Set(placements.flatMap((p) => p.ownersOf(key)))].sort(
        (a, b) =>
          Number(b === this.self) - Number(a === this.self) ||
          Number(this.membership.isUp(b)) - Number(this.membership.isUp(a))
      )
      const current = placements[0] as Placement
      const need = placements.length > 1 ? owners.length : current.replicas - current.quorum + 1
      const asked: Array<readonly [string, Either.Either<A, StoreError>]> = []
      let next = 0
      while (next < owners.length && asked.filter(([, a]) => Either.isRight(a)).length < need) {
        const wave = owners.slice(next, next + need - asked.filter(([, a]) => Either.isRight(a)).length)
        next += wave.length
        const answers = yield* Effect.all(
          wave.map((node) => this.askOne(node, local, op, args)),
          { concurrency: "unbounded" }
        )
        wave.forEach((node, i) => {
          asked.push([node, answers[i] as Either.Either<A, StoreError>])
        })
      }
      return yield* this.settle(asked, (p) => [p.ownersOf(key)])
    })
  }

  readonly reader: SpanReaderService = {
    trace: (traceId) =>
      Effect.map(
        this.askOwners(traceId, () => this.local.reader.trace(traceId), "trace", [traceId]),
        Merge.spans
      ),
    searchTraces: (query) =>
      Effect.map(
        this.askAll(() => this.local.reader.searchTraces(query), "search", [query]),
        (pages) => Merge.pages(pages, query.limit)
      ),
    correlatedTraceIds: (id, limit) =>
      Effect.map(
        this.askAll(() => this.local.reader.correlatedTraceIds(id, limit), "correlated", [id, limit]),
        (lists) => Merge.ids(lists, limit)
      ),
    logs: (id, limit) =>
      Effect.map(
        this.askOwners(id, () => this.local.reader.logs(id, limit), "logs", [id, limit]),
        (lists) => Merge.logs(lists, limit)
      ),
    red: (service, route, fromSec, toSec) =>
      Effect.map(
        this.askOwners(service, () => this.local.reader.red(service, route, fromSec, toSec), "red", [
          service,
          route,
          fromSec,
          toSec
        ]),
        Merge.redCells
      ),
    services: () =>
      Effect.map(
        this.askAll(() => this.local.reader.services(), "services", []),
        Merge.services
      )
  }

  readonly writer: BatchWriterService<ClusterPlan> = {
    plan: (batch) => this.plan(batch),
    writeRound: (round) =>
      Effect.tryPromise({
        try: () => this.writeRound(round),
        catch: (cause) => new StoreError({ operation: "write", cause })
      }),
    encode: () => {
      throw new Error("cluster plans are not sent further")
    },
    decode: () => {
      throw new Error("cluster plans are not sent further")
    },
    write: (batches) =>
      Effect.flatMap(
        Effect.forEach(batches, (b) => this.plan(b)),
        (round) => this.writer.writeRound(round)
      )
  }

  // ---- tail -------------------------------------------------------------------------------------

  wantsSpans(): boolean {
    return this.membership.tailing().length > 0
  }

  /** Spans this node acknowledged go to the peers that have tail subscribers, once each. */
  acknowledged(spans: ReadonlyArray<Telemetry.Span>, at: number): void {
    for (const peer of this.membership.tailing()) this.links.get(peer)?.send(["tail", [spans, at]])
  }

  // ---- records, for data moves and repair --------------------------------------------------------

  /** The records of a slice of a minute this node stores that both it and `peer` own. */
  async recordsFor(minute: number, slice: number, peer: string): Promise<ReadonlyArray<RecordEntry>> {
    const placement = this.membership.current
    const all = await run(this.local.replica.records(minute, slice))
    return all.filter((r) => {
      const owners = placement.ownersOf(r.routing)
      return owners.includes(peer) && owners.includes(this.self)
    })
  }

  /** Stores exported records (a data move or a repair), planned with their owners for the digests. */
  async importRecords(bytes: Uint8Array): Promise<number> {
    const shares = await run(this.local.replica.importRecords(bytes))
    const placement = this.membership.current
    let records = 0
    const plans: Array<PlannedBatch> = []
    // One share per owner set, so each record's digest cells follow its owners.
    for (const { share } of shares.flatMap((s) => splitByOwners(placement, s))) {
      const planned = this.local.writer.plan(share)
      if (Either.isLeft(planned)) continue
      records += share.spans.length + share.logs.length + share.metrics.length + (share.red?.length ?? 0)
      plans.push(planned.right)
    }
    await Promise.all(this.writeLocal(plans))
    return records
  }

  close(): void {
    for (const link of this.links.values()) link.close()
    this.endpoint?.close("node shutting down")
  }
}
