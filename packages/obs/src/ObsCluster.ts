/**
 * obs nodes as one store: a consistent-hash ring (core's `HashRing`) over the members, each record
 * kept by `replication` owners, every write acknowledged at a quorum, hints handed off, data moved on
 * joins and leaves, replicas repaired by anti-entropy, reads asked of the owners (or everyone) and
 * merged. See the README's "Cluster" section.
 *
 * The cluster is a Layer on top of a node's own store: `layerOn(config)` takes the local store's
 * services (`BatchWriter`, `SpanReader`, `StoreMaintenance`, `Replica`) and provides the same
 * interfaces routed over the ring, plus the node extension that mounts `/v1/peer` and `/v1/cluster`
 * on the node's port, and the `Cluster` service. `layer(config)` is a whole cluster node:
 * `ObsNode.layerOn` over `layerOn` over `LmdbStore`.
 */

import { Errors } from "@iii/core"
import { Context, Duration, Effect, Either, Layer, Option, Redacted, Runtime, Schedule } from "effect"
import {
  ClusterError,
  type DataDirError,
  type ServerError,
  type StoreError,
  type TlsError
} from "./Errors.js"
import { ClusterNode } from "./internal/cluster/ClusterNode.js"
import * as EndpointSlices from "./internal/cluster/EndpointSlices.js"
import { tick } from "./internal/cluster/Maintenance.js"
import { Membership } from "./internal/cluster/Membership.js"
import type { NodeState } from "./internal/cluster/PeerProtocol.js"
import {
  defaultRingLayout,
  describeLayout,
  type RingLayout,
  sameLayout
} from "./internal/cluster/Placement.js"
import { layoutVersion } from "./internal/lmdb/Keys.js"
import type { Answer } from "./internal/node/Endpoints.js"
import { line } from "./internal/node/NodeCounters.js"
import { loadTlsCredentials } from "./internal/node/Tls.js"
import * as LmdbStore from "./LmdbStore.js"
import * as ObsNode from "./ObsNode.js"
import type { ClusterConfig, ObsNodeConfig } from "./ObsNodeConfig.js"
import { BatchWriter, Replica, SpanReader, StoreMaintenance } from "./Store.js"

export interface MemberStatus {
  readonly address: string
  /** What it says of itself, or `down` when it does not answer this node's heartbeats. */
  readonly state: NodeState | "down"
  /** Share of the ring's partitions it keeps (as any of the owners), and as the preferred owner. */
  readonly ownership: { readonly replica: number; readonly primary: number }
  /** Writes this node keeps for it as hints, until it takes them. */
  readonly replicationLag: {
    readonly hints: number
    readonly hintBytes: number
    readonly oldestHintSeconds: number
  }
  /** Milliseconds since this node last heard from it (0: this node; -1: never). */
  readonly lastHeardMs: number
}

export interface ClusterStatus {
  readonly node: string
  readonly state: NodeState
  readonly replicationFactor: number
  /** Owners per record now (the factor, capped at the number of members). */
  readonly replicas: number
  readonly writeQuorum: number
  readonly ring: { readonly vnodes: number; readonly probes: number; readonly partitions: number }
  /** Every member has finished moving data for the current placement. */
  readonly stable: boolean
  /** And has since checked it with anti-entropy: reads ask the current owners only. */
  readonly converged: boolean
  readonly members: ReadonlyArray<MemberStatus>
  readonly repair: {
    readonly passes: number
    readonly lastPassAt: string | null
    readonly minutesCompared: number
    readonly minutesMismatched: number
    readonly recordsCopied: number
  }
  readonly moved: { readonly records: number; readonly bytes: number }
}

export interface ClusterService {
  readonly node: string
  readonly status: () => Effect.Effect<ClusterStatus, StoreError>
  /** Starts a clean leave: this node hands its data to the new owners, then leaves the ring. */
  readonly leave: () => Effect.Effect<void>
}

export class Cluster extends Context.Tag("@iii/obs/Cluster")<Cluster, ClusterService>() {}

const json = (status: number, value: unknown): Answer => ({
  status,
  contentType: "application/json; charset=utf-8",
  body: JSON.stringify(value)
})

/** The ring layout a data directory was written with: a node with another refuses to start. */
const checkLayout = (replica: Replica["Type"], layout: RingLayout, dataDir: string) =>
  Effect.gen(function* () {
    const stored = (yield* replica.getSetting("cluster.ring")) as RingLayout | undefined
    if (stored !== undefined && !sameLayout(stored, layout))
      return yield* new ClusterError({
        reason: `data directory ${dataDir} was written by a cluster with ${describeLayout(stored)}; this node is configured with ${describeLayout(layout)}. Refusing to start: records would be looked for on the wrong nodes. Start it with the same settings (--replication ${stored.replication}), or with an empty data directory`
      })
    if (stored === undefined) yield* replica.putSetting("cluster.ring", layout)
  })

/**
 * The ring router over the node's own store, for the layer's lifetime: connections to every member,
 * the background loop, and (with `--peers-from-service`) the EndpointSlice watch.
 */
export const layerOn = (
  cfg: ObsNodeConfig,
  cluster: ClusterConfig
): Layer.Layer<
  BatchWriter | SpanReader | StoreMaintenance | ObsNode.Extension | Cluster,
  StoreError | ClusterError | TlsError,
  BatchWriter | SpanReader | StoreMaintenance | Replica
> =>
  Layer.scopedContext(
    Effect.gen(function* () {
      const local = {
        writer: yield* BatchWriter,
        reader: yield* SpanReader,
        maintenance: yield* StoreMaintenance,
        replica: yield* Replica
      }
      // With a client CA, the node dials its peers over TLS with its own certificate as the client's.
      const tls = yield* Effect.transposeMapOption(
        Option.filter(cfg.tls, (t) => t.clientCaFile !== undefined),
        (t) => loadTlsCredentials(t.certFile, t.keyFile, t.clientCaFile)
      )
      const layout: RingLayout = { ...defaultRingLayout, replication: cluster.replication }
      yield* checkLayout(local.replica, layout, cfg.dataDir)
      const setting = (name: string) =>
        Effect.map(local.replica.getSetting(name), (v) =>
          Array.isArray(v) ? (v as ReadonlyArray<string>) : undefined
        )
      const runtime = yield* Effect.runtime<never>()
      const log = (level: "info" | "warn", message: string) =>
        Runtime.runFork(runtime)(level === "info" ? Effect.logInfo(message) : Effect.logWarning(message))
      const service =
        cluster.peers._tag === "Service" ? EndpointSlices.parseServiceRef(cluster.peers.service) : undefined
      const membership = new Membership({
        self: cluster.advertise,
        layout,
        source: cluster.peers._tag === "Static" ? cluster.peers.peers : [],
        admitsJoiners: cluster.peers._tag === "Static",
        joined: (yield* setting("cluster.joined")) ?? [],
        left: (yield* setting("cluster.left")) ?? [],
        settled: yield* setting("cluster.settled")
      })
      const node = new ClusterNode(
        {
          self: cluster.advertise,
          layout,
          token: Option.getOrUndefined(Option.map(cfg.token, Redacted.value)),
          tls: Option.getOrUndefined(
            Option.flatMap(tls, ({ cert, key, clientCa }) =>
              clientCa === undefined ? Option.none() : Option.some({ cert, key, ca: clientCa })
            )
          ),
          maxPeerConnections: cfg.maxPeerConnections,
          layoutVersion,
          heartbeatInterval: Duration.toMillis(cluster.heartbeatInterval),
          heartbeatTimeout: Duration.toMillis(cluster.heartbeatTimeout),
          repairInterval: Duration.toMillis(cluster.repairInterval)
        },
        local,
        membership,
        log
      )
      let closing = false
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          closing = true
          node.close()
        })
      )
      const persist = () =>
        Effect.runPromise(
          Effect.all([
            local.replica.putSetting("cluster.joined", membership.joiners),
            local.replica.putSetting("cluster.left", membership.leavers),
            local.replica.putSetting("cluster.settled", membership.settled?.members ?? [])
          ])
        ).then(() => undefined)

      if (service !== undefined) {
        // Members missing from the endpoints stay (down) for the removal grace: a restarting pod is
        // not a ring change.
        const seen = new Map<string, number>()
        const grace = Duration.toMillis(cluster.removalGrace)
        const apply = (ready: ReadonlyArray<string>) => {
          const now = Date.now()
          for (const m of ready) seen.set(m, now)
          for (const [m, at] of seen) if (now - at > grace && !ready.includes(m)) seen.delete(m)
          if (membership.setSource(seen.keys())) {
            node.syncLinks()
            log("info", `members from ${service.namespace}/${service.name}: ${[...seen.keys()].join(", ")}`)
          }
        }
        let latest: ReadonlyArray<string> = []
        const watched = yield* Effect.tryPromise({
          try: () =>
            EndpointSlices.watch(
              service,
              Number(cluster.advertise.slice(cluster.advertise.lastIndexOf(":") + 1)),
              (ready) => {
                latest = ready
                apply(ready)
              },
              (message) => log("warn", message)
            ),
          catch: (cause) =>
            new ClusterError({
              reason: `cannot watch the endpoints of ${service.namespace}/${service.name}: ${Errors.messageOf(cause)}`,
              cause
            })
        })
        yield* Effect.addFinalizer(() => Effect.promise(() => watched.stop().catch(() => undefined)))
        // Removals after the grace need a look even when the endpoints do not change.
        yield* Effect.sync(() => apply(latest)).pipe(
          Effect.repeat(Schedule.spaced(Duration.seconds(10))),
          Effect.forkScoped
        )
      }

      let lastRepair = Date.now()
      yield* Effect.promise(async () => {
        if (closing) return
        const due = Date.now() - lastRepair >= Duration.toMillis(cluster.repairInterval)
        if (await tick(node, due, persist, (m) => log("info", m))) lastRepair = Date.now()
      }).pipe(
        Effect.repeat(
          Schedule.spaced(Duration.millis(Math.min(1000, Duration.toMillis(cluster.repairInterval))))
        ),
        Effect.forkScoped
      )

      const shares = new Map<string, { replica: number; primary: number }>()
      const status = (): Effect.Effect<ClusterStatus, StoreError> =>
        Effect.map(local.replica.hintStats(), (hints) => {
          const placement = membership.current
          const c = node.counters
          return {
            node: cluster.advertise,
            state: membership.selfState,
            replicationFactor: layout.replication,
            replicas: placement.replicas,
            writeQuorum: placement.quorum,
            ring: { vnodes: layout.vnodes, probes: layout.probes, partitions: 2 ** layout.partitionBits },
            stable: membership.stable(),
            converged: membership.converged(),
            members: membership.view().map((v) => {
              const id = `${placement.id}\u0000${v.address}`
              let share = shares.get(id)
              if (share === undefined) {
                share = placement.share(v.address)
                shares.set(id, share)
              }
              const lag = hints.get(v.address)
              return {
                address: v.address,
                state: v.state,
                ownership: { replica: round(share.replica), primary: round(share.primary) },
                replicationLag: {
                  hints: lag?.count ?? 0,
                  hintBytes: lag?.bytes ?? 0,
                  oldestHintSeconds: lag === undefined ? 0 : Math.round(lag.oldestMs / 1000)
                },
                lastHeardMs: v.silentMs
              }
            }),
            repair: {
              passes: c.repairPasses,
              lastPassAt: c.repairLastPassAt === 0 ? null : new Date(c.repairLastPassAt).toISOString(),
              minutesCompared: c.repairMinutesCompared,
              minutesMismatched: c.repairMinutesMismatched,
              recordsCopied: c.repairRecordsCopied
            },
            moved: { records: c.movedRecords, bytes: c.movedBytes }
          }
        })
      const leave = () =>
        Effect.sync(() => {
          if (membership.selfState === "leaving" || membership.selfState === "left") return
          membership.setSelfState("leaving")
          log("info", "leaving the cluster: handing data over to the new owners")
        })

      const metrics = async () => {
        const s = await Effect.runPromise(status())
        const c = node.counters
        const count = (state: string) => s.members.filter((m) => m.state === state).length
        return [
          ...["up", "down", "joining", "leaving"].map(
            (state) =>
              `# HELP iii_obs_cluster_members Members by state, as this node sees them.\n# TYPE iii_obs_cluster_members gauge\niii_obs_cluster_members{state="${state}"} ${count(state)}\n`
          ),
          line(
            "iii_obs_peer_connections",
            "gauge",
            "Open node-to-node connections other nodes dialled to this one.",
            node.peerConnections
          ),
          line(
            "iii_obs_cluster_writes_unavailable_total",
            "counter",
            "Batches without a write quorum.",
            c.writesUnavailable
          ),
          line(
            "iii_obs_cluster_hints_pending",
            "gauge",
            "Writes kept here for members that missed them.",
            s.members.reduce((n, m) => n + m.replicationLag.hints, 0)
          ),
          line("iii_obs_cluster_hints_stored_total", "counter", "Writes kept as hints.", c.hintsStored),
          line(
            "iii_obs_cluster_hints_handed_off_total",
            "counter",
            "Hinted writes handed off.",
            c.hintsHandedOff
          ),
          line("iii_obs_cluster_reads_partial_total", "counter", "Reads answered partial.", c.readsPartial),
          line(
            "iii_obs_cluster_moved_records_total",
            "counter",
            "Records sent to new owners.",
            c.movedRecords
          ),
          line("iii_obs_cluster_moved_bytes_total", "counter", "Bytes sent to new owners.", c.movedBytes),
          line("iii_obs_repair_passes_total", "counter", "Anti-entropy passes completed.", c.repairPasses),
          line(
            "iii_obs_repair_minutes_compared_total",
            "counter",
            "Minute digests compared with a peer.",
            c.repairMinutesCompared
          ),
          line(
            "iii_obs_repair_minutes_mismatched_total",
            "counter",
            "Minute digests that differed and were reconciled.",
            c.repairMinutesMismatched
          ),
          line(
            "iii_obs_repair_records_copied_total",
            "counter",
            "Records copied from peers.",
            c.repairRecordsCopied
          ),
          line(
            "iii_obs_repair_last_pass_timestamp_seconds",
            "gauge",
            "When the last anti-entropy pass ended.",
            Math.floor(c.repairLastPassAt / 1000)
          )
        ].join("")
      }

      const extension: ObsNode.ExtensionService = {
        answer: (method, url) => {
          if (url.pathname === "/v1/cluster" && (method === "GET" || method === "HEAD"))
            return Effect.runPromise(
              Effect.match(status(), {
                onFailure: () => json(500, { error: "store failure; see the node's log" }),
                onSuccess: (s) => json(200, s)
              })
            )
          if (url.pathname === "/v1/cluster/leave" && method === "POST")
            return Effect.runPromise(
              Effect.as(leave(), json(202, { node: cluster.advertise, state: "leaving" }))
            )
          return undefined
        },
        upgrade: (req, socket, head) => node.upgrade(req, socket, head),
        metrics,
        attach: (parts) => node.attach(parts),
        wantsSpans: () => node.wantsSpans(),
        acknowledged: (spans, at) => node.acknowledged(spans, at)
      }

      yield* Effect.logInfo(
        `obs cluster node ${cluster.advertise}: ${membership.members().length} members (${membership.members().join(", ")}), ${describeLayout(layout)}`
      )
      return Context.make(BatchWriter, node.writer).pipe(
        Context.add(SpanReader, node.reader),
        Context.add(StoreMaintenance, local.maintenance),
        Context.add(ObsNode.Extension, extension),
        Context.add(Cluster, { node: cluster.advertise, status, leave })
      )
    })
  )

const round = (n: number) => Math.round(n * 10_000) / 10_000

/**
 * A whole cluster node: the node (`ObsNode.layerOn`) over the ring router (`layerOn`) over its own LMDB
 * store in `cfg.dataDir`. Fails with `ClusterError` when `cfg.cluster` is none or the data directory
 * was written with another ring layout.
 */
export const layer = (
  cfg: ObsNodeConfig
): Layer.Layer<
  ObsNode.ObsNode | Cluster,
  StoreError | DataDirError | ServerError | TlsError | ClusterError
> =>
  Either.match(
    Either.fromOption(
      cfg.cluster,
      () => new ClusterError({ reason: "no cluster settings: give --peers or --peers-from-service" })
    ),
    {
      onLeft: (e) => Layer.fail(e),
      onRight: (cluster) => {
        const router = layerOn(cfg, cluster).pipe(
          Layer.provide(LmdbStore.layer({ path: cfg.dataDir, writerThread: true }))
        )
        return ObsNode.layerOn(cfg).pipe(Layer.provideMerge(router))
      }
    }
  )
