/**
 * One obs node as an Effect Layer: group-committed ingest on `/v1/ingest`, the query API, the live
 * tail on `/v1/tail`, background retention, all on one port (and optionally the same over HTTPS/WSS
 * on a second one). `layerOn(config)` runs the node over whichever store the context provides
 * (`Store.ts`: the LMDB store, or the cluster's ring router); `layer(config)` gives it its own LMDB
 * store in the data directory. `ObsNode` (the service) tells where it listens. The node's parts live
 * in `internal/node/`; its settings in `ObsNodeConfig`.
 */
import { randomUUID } from "node:crypto"
import type { Server as HttpServer } from "node:http"
import type { Server as HttpsServer } from "node:https"
import type { Socket } from "node:net"
import type { Telemetry } from "@iii/core"
import { Errors } from "@iii/core"
import { Context, Duration, Effect, Either, Layer, Option, Redacted, Runtime, Schedule } from "effect"
import { type DataDirError, ServerError, type StoreError, type TlsError } from "./Errors.js"
import type { Endpoints, NodeSockets } from "./internal/node/Endpoints.js"
import { GroupCommit } from "./internal/node/GroupCommit.js"
import { NodeCounters } from "./internal/node/NodeCounters.js"
import * as NodeTime from "./internal/node/NodeTime.js"
import * as OtlpExport from "./internal/node/OtlpExport.js"
import { createNodeServers } from "./internal/node/Server.js"
import { defaultTailLimits, TailHub } from "./internal/node/TailHub.js"
import { loadTlsCredentials, type TlsCredentials } from "./internal/node/Tls.js"
import * as LmdbStore from "./LmdbStore.js"
import type { ObsNodeConfig } from "./ObsNodeConfig.js"
import { BatchWriter, type IngestBatch, type PlannedBatch, SpanReader, StoreMaintenance } from "./Store.js"

export { defaults, makeConfig, type ObsNodeConfig, type TlsConfig } from "./ObsNodeConfig.js"

export interface ObsNodeInfo {
  readonly host: string
  readonly port: number
  /** `http://host:port` (with 127.0.0.1 when bound to every interface). */
  readonly url: string
  /** The TLS listener, when configured: its port and `https://host:port`. */
  readonly tls: Option.Option<{ readonly port: number; readonly url: string }>
  /** The OTLP/gRPC listener's port, when on (`otlpGrpcPort`). OTLP/HTTP is on `port`. */
  readonly otlpGrpcPort: Option.Option<number>
}

export class ObsNode extends Context.Tag("@iii/obs/ObsNode")<ObsNode, ObsNodeInfo>() {}

/** The node's live tail, as an extension sees it. */
export interface LocalTail {
  /** Hands spans acknowledged elsewhere to this node's subscribers. */
  readonly publish: (spans: ReadonlyArray<Telemetry.Span>, committedAt: number) => void
  /** This node's subscribers. */
  readonly subscribers: () => number
}

/** What the node lends a layer under it once it runs. */
export interface NodeParts {
  readonly tail: LocalTail
  /** The rules and counters the layer's own WebSockets (the cluster's `/v1/peer`) come under. */
  readonly sockets: NodeSockets
}

/**
 * What a layer under the node adds to it (the cluster): endpoints on its port, and a tail that spans
 * the cluster. Optional: without one in the context the node serves only itself.
 */
export interface ExtensionService extends Endpoints {
  /** Called once, before the node listens, with its tail and socket rules. */
  readonly attach: (node: NodeParts) => void
  /** Whether subscribers elsewhere want the spans this node acknowledges. */
  readonly wantsSpans: () => boolean
  /** Spans this node has just acknowledged, for subscribers elsewhere. */
  readonly acknowledged: (spans: ReadonlyArray<Telemetry.Span>, committedAt: number) => void
}

export class Extension extends Context.Tag("@iii/obs/ObsNode/Extension")<Extension, ExtensionService>() {}

const listen = (server: HttpServer | HttpsServer, port: number, host: string, what: string) => {
  // Upgraded sockets (WebSockets, peers' included) leave the server's own bookkeeping, and close()
  // waits for them: each is destroyed at release unless its owner closed it first.
  const sockets = new Set<Socket>()
  server.on("connection", (socket: Socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
  })
  return Effect.acquireRelease(
    Effect.async<number, ServerError>((resume) => {
      const onError = (cause: Error) =>
        resume(
          Effect.fail(
            new ServerError({ reason: `cannot listen ${what}on ${host}:${port}: ${cause.message}`, cause })
          )
        )
      server.once("error", onError)
      server.listen(port, host, () => {
        server.off("error", onError)
        const a = server.address()
        resume(Effect.succeed(typeof a === "object" && a !== null ? a.port : port))
      })
    }),
    () =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        server.closeAllConnections()
        for (const socket of sockets) socket.destroy()
      })
  )
}

/** The TLS listener's credentials, loaded before anything else: a bad file stops the node with the file named. */
const loadTls = (cfg: ObsNodeConfig) =>
  Effect.transposeMapOption(cfg.tls, (t) =>
    Effect.map(loadTlsCredentials(t.certFile, t.keyFile, t.clientCaFile), (credentials) => ({
      port: t.port,
      credentials
    }))
  )

type LoadedTls = Option.Option<{ readonly port: number; readonly credentials: TlsCredentials }>

/** What a batch waits for its round as: the store's plan, and the spans for the tail. */
interface Queued {
  readonly plan: PlannedBatch
  /** Kept only while the tail has subscribers. */
  readonly tailed: ReadonlyArray<Telemetry.Span> | undefined
  /** Kept only when OTLP export is on. */
  readonly exported: IngestBatch | undefined
}

const serve = (cfg: ObsNodeConfig, tls: LoadedTls) =>
  Effect.gen(function* () {
    const writerStore = yield* BatchWriter
    const reader = yield* SpanReader
    const maintenance = yield* StoreMaintenance
    const extension = Option.getOrUndefined(yield* Effect.serviceOption(Extension))
    const counters = new NodeCounters()
    const time = yield* NodeTime.make({
      retention: cfg.retention,
      maxClockSkew: cfg.maxClockSkew,
      // The node's own store: under a cluster, a search would ask every peer before listening.
      newestStored: yield* maintenance.newestSpanStart().pipe(Effect.orElseSucceed(() => undefined))
    })
    // The node's runtime (its logger, its clock) for effects started from socket callbacks.
    const runtime = yield* Effect.runtime<never>()
    const runFork = Runtime.runFork(runtime)
    // Set once the store can no longer keep what it acknowledges: not ready from then on.
    let storeFailure: string | undefined
    const checkStore = Effect.catchAll(maintenance.check(), (e) =>
      storeFailure !== undefined
        ? Effect.void
        : Effect.zipRight(
            Effect.sync(() => {
              storeFailure = e.message
            }),
            Effect.logError(
              `the node is not ready and acknowledges nothing more: ${e.message}; what it acknowledged before stays where it was stored`
            )
          )
    )
    const tail = new TailHub({
      ...defaultTailLimits,
      maxQueuedSpans: cfg.tailQueueSpans,
      maxStalledMs: Duration.toMillis(cfg.tailStallTimeout)
    })
    // Before the writer: its finalizer (writing what was offered to the queue) runs after the writer's drain.
    const exporter = Option.isSome(cfg.exportOtlp)
      ? yield* OtlpExport.make(cfg.exportOtlp.value, cfg.dataDir)
      : undefined
    const wantsSpans = () => tail.size > 0 || (extension?.wantsSpans() ?? false)
    const writer = new GroupCommit<Queued>({
      // Planned on arrival, so the decoded spans die young; they are kept for the tail only while
      // it has subscribers (one subscribing meanwhile misses at most the batches already queued).
      prepare: (batch) =>
        Either.map(writerStore.plan(batch), (plan) => ({
          plan,
          tailed: wantsSpans() ? batch.spans : undefined,
          exported: exporter === undefined ? undefined : batch
        })),
      // A failed round may mean the store is lost: check at once rather than at the next tick.
      write: (round) =>
        Runtime.runPromise(runtime)(
          writerStore.writeRound(round.map((b) => b.plan)).pipe(Effect.tapError(() => checkStore))
        ),
      committed: (round) => {
        const committedAt = performance.timeOrigin + performance.now()
        for (const { plan, tailed } of round) {
          counters.batchesStored++
          counters.spansStored += plan.spanCount
          counters.logsStored += plan.logCount
          counters.metricsStored += plan.metricCount
          if (tailed === undefined || tailed.length === 0) continue
          if (tail.size > 0) tail.publish(tailed, committedAt)
          extension?.acknowledged(tailed, committedAt)
        }
        exporter?.offer(round.flatMap((b) => (b.exported === undefined ? [] : [b.exported])))
      },
      maxQueuedSpans: cfg.maxQueuedSpans,
      maxSpansPerCommit: cfg.maxSpansPerCommit,
      maxInFlight: cfg.maxCommitsInFlight
    })
    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        while (writer.depth > 0) await new Promise((r) => setTimeout(r, 5))
      })
    )

    let ready = false
    const token = Option.map(cfg.token, Redacted.value)
    const rules = {
      token: Option.getOrUndefined(token),
      helloTimeoutMs: Duration.toMillis(cfg.helloTimeout),
      pingIntervalMs: Duration.toMillis(cfg.pingInterval)
    }
    extension?.attach({
      tail: {
        publish: (spans, committedAt) => tail.publish(spans, committedAt),
        subscribers: () => tail.size
      },
      sockets: { rules, counters }
    })
    const servers = createNodeServers({
      settings: {
        nodeId: cfg.nodeId || randomUUID(),
        maxFrameBytes: cfg.maxFrameBytes,
        maxStrikes: 5,
        helloTimeoutMs: rules.helloTimeoutMs,
        misfit: time.misfit
      },
      rules,
      maxIngestConnections: cfg.maxIngestConnections,
      maxTailSubscribers: cfg.maxTailSubscribers,
      reader,
      maintenance,
      writer,
      tail,
      counters,
      exportCounters: exporter?.counters,
      isReady: () => ready && storeFailure === undefined,
      storeFailure: () => storeFailure,
      dashboardDir: cfg.dashboardDir,
      nowMs: time.nowMs,
      logError: (message) => {
        runFork(Effect.logError(message))
      },
      endpoints: extension
    })
    const port = yield* listen(servers.http, cfg.port, cfg.host, "")
    const tlsListener = yield* Effect.transposeMapOption(tls, ({ port, credentials }) =>
      Effect.map(listen(servers.createTlsServer(credentials), port, cfg.host, "for TLS "), (bound) => ({
        port: bound,
        credentials
      }))
    )
    const otlpGrpc =
      cfg.otlpGrpcPort === 0
        ? Option.none<number>()
        : Option.some(
            yield* Effect.acquireRelease(
              Effect.tryPromise({
                // Loaded only when on: @grpc/grpc-js takes a while to import.
                try: () =>
                  import("./internal/node/OtlpGrpc.js").then(async (OtlpGrpc) => ({
                    close: OtlpGrpc.close,
                    ...(await OtlpGrpc.listen(servers.otlp, cfg.host, cfg.otlpGrpcPort))
                  })),
                catch: (cause) =>
                  new ServerError({
                    reason: `cannot listen for OTLP/gRPC on ${cfg.host}:${cfg.otlpGrpcPort}: ${Errors.messageOf(cause)}`,
                    cause
                  })
              }),
              ({ server, close }) => Effect.promise(() => close(server))
            ).pipe(Effect.map(({ port }) => port))
          )
    // Runs before the servers close: WebSockets get a 1001 close frame first.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        ready = false
        servers.closeSockets()
      })
    )
    yield* checkStore.pipe(Effect.repeat(Schedule.spaced(cfg.storeCheckInterval)), Effect.forkScoped)
    // Suspended: each pass takes the cutoff anew (built once, every pass reused the start-up cutoff).
    yield* Effect.suspend(() => maintenance.deleteOlderThan(time.retentionCutoff())).pipe(
      Effect.tap((r) =>
        r.deletedSpans + r.deletedLogs + r.deletedMetrics + r.deletedRollups > 0
          ? Effect.logInfo("retention removed expired data", r)
          : Effect.void
      ),
      Effect.catchAll((e) => Effect.logWarning(`retention failed: ${e.message}`)),
      Effect.delay(Duration.millis(1)),
      Effect.repeat(Schedule.spaced(cfg.retentionInterval)),
      Effect.forkScoped
    )

    ready = true
    const shownHost = cfg.host === "0.0.0.0" || cfg.host === "::" ? "127.0.0.1" : cfg.host
    const info: ObsNodeInfo = {
      host: cfg.host,
      port,
      url: `http://${shownHost}:${port}`,
      tls: Option.map(tlsListener, (t) => ({ port: t.port, url: `https://${shownHost}:${t.port}` })),
      otlpGrpcPort: otlpGrpc
    }
    if (Option.isNone(token))
      yield* Effect.logWarning(
        "obs node started without a token: ingest, query and tail are open to anyone who can reach it"
      )
    const clientCaFile = Option.getOrUndefined(cfg.tls)?.clientCaFile
    const peerCa =
      clientCaFile === undefined ? "" : `; peers' client certificates from the CA in ${clientCaFile}`
    const tlsNote = Option.match(tlsListener, {
      onNone: () => "",
      onSome: ({ port, credentials: c }) =>
        `, TLS on ${cfg.host}:${port} (certificate ${c.subject}, valid until ${c.validTo.toISOString()}${peerCa})`
    })
    if (Option.isSome(tlsListener) && tlsListener.value.credentials.validTo.getTime() < Date.now())
      yield* Effect.logWarning(`the TLS certificate has expired: clients will refuse it${tlsNote}`)
    const grpcNote = Option.match(otlpGrpc, {
      onNone: () => "",
      onSome: (p) => `, OTLP/gRPC on ${cfg.host}:${p}`
    })
    yield* Effect.logInfo(
      `obs node listening on ${cfg.host}:${port}${tlsNote}${grpcNote} (data in ${cfg.dataDir})`
    )
    return info
  })

/**
 * Starts a node over the store the context provides (`BatchWriter`, `SpanReader`, `StoreMaintenance`)
 * for the layer's lifetime; stopping closes sockets and waits for pending commits. The store owns its
 * data: `cfg.dataDir` is only logged, and holds the OTLP export queue when `exportOtlp` is set.
 */
export const layerOn = (
  cfg: ObsNodeConfig
): Layer.Layer<ObsNode, ServerError | TlsError, BatchWriter | SpanReader | StoreMaintenance> =>
  Layer.scoped(
    ObsNode,
    Effect.flatMap(loadTls(cfg), (tls) => serve(cfg, tls))
  )

/**
 * Starts a node with its own LMDB store in `cfg.dataDir` (writes in a writer thread) for the layer's
 * lifetime; stopping closes sockets, finishes pending commits, closes LMDB. A bad TLS file fails it
 * before the store is opened.
 */
export const layer = (
  cfg: ObsNodeConfig
): Layer.Layer<ObsNode, DataDirError | StoreError | ServerError | TlsError> =>
  Layer.unwrapScoped(
    Effect.map(loadTls(cfg), (tls) =>
      Layer.scoped(ObsNode, serve(cfg, tls)).pipe(
        Layer.provide(LmdbStore.layer({ path: cfg.dataDir, writerThread: true }))
      )
    )
  )
