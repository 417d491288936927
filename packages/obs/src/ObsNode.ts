/**
 * One obs node as an Effect Layer: the LMDB store, group-committed ingest on `/v1/ingest`, the query
 * API, the live tail on `/v1/tail`, background retention, all on one port (and optionally the same
 * over HTTPS/WSS on a second one). `layer(config)` starts it for the lifetime of the layer's scope;
 * `ObsNode` (the service) tells where it listens.
 */
import { randomUUID } from "node:crypto"
import { readFileSync } from "node:fs"
import type { Server as HttpServer } from "node:http"
import type { Server as HttpsServer } from "node:https"
import { hostname } from "node:os"
import { WireProtocol } from "@iii/core"
import {
  Config,
  ConfigError,
  Context,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  Redacted,
  Schedule
} from "effect"
import { ServerError, type StoreError, type TlsError } from "./Errors.js"
import { GroupCommit } from "./internal/GroupCommit.js"
import { NodeCounters } from "./internal/NodeCounters.js"
import { parseDurationNano } from "./internal/Params.js"
import { createNodeServers } from "./internal/Server.js"
import { defaultTailLimits, TailHub } from "./internal/TailHub.js"
import { loadTlsCredentials } from "./internal/Tls.js"
import { planBatch } from "./internal/WritePlan.js"
import * as LmdbStore from "./LmdbStore.js"

export interface TlsConfig {
  /** PEM certificate file (leaf first, then any intermediates). */
  readonly certFile: string
  /** PEM private key file (unencrypted) of that certificate. */
  readonly keyFile: string
  /** Port of the HTTPS + WSS listener; 0 picks a free one. Default 4321. */
  readonly port: number
}

export interface ObsNodeConfig {
  /** Directory of the LMDB environment (created when missing). */
  readonly dataDir: string
  /** TCP port; 0 picks a free one (read it back from `ObsNode`). Default 4320. */
  readonly port: number
  /** Interface to bind. Default "0.0.0.0". */
  readonly host: string
  /** When set, ingest, query and tail require it. Default: none (the node logs a warning that it is open). */
  readonly token: Option.Option<Redacted.Redacted<string>>
  /** Age after which data is deleted. Default 7 days. */
  readonly retention: Duration.Duration
  /** How often retention runs. Default 1 minute. */
  readonly retentionInterval: Duration.Duration
  /** Largest ingest frame accepted. Default: core's `defaultMaxFrameBytes` (16 MiB). */
  readonly maxFrameBytes: number
  /** Spans (plus logs and points) queued for commit before sockets are paused. Default 100,000. */
  readonly maxQueuedSpans: number
  /**
   * Most spans one ingest transaction takes. Default 8,000: a round takes what has queued while the
   * previous one committed, and each commit waits for the previous one's fsync, so fewer, larger
   * rounds carry more spans per fsync (bench:ingest, 20 s, 4 batches in flight per connection: 4 × 2,000
   * → 2 × 8,000 took 343k → 367k spans/s).
   */
  readonly maxSpansPerCommit: number
  /** Ingest transactions in flight at once (one builds while the other commits). Default 2. */
  readonly maxCommitsInFlight: number
  /** Spans a tail subscriber may have waiting before new ones are dropped. Default 10,000. */
  readonly tailQueueSpans: number
  /** Name reported to agents in the welcome frame. Default: the host name. */
  readonly nodeId: string
  /**
   * A second listener, on the same host, serving everything above over HTTPS and WSS (the Kubernetes
   * aggregator reaches the External Metrics API only over HTTPS). The files are read once, at start:
   * rotate them by restarting the node. Default: none.
   */
  readonly tls: Option.Option<TlsConfig>
}

export const defaults = {
  port: 4320,
  host: "0.0.0.0",
  retention: Duration.days(7),
  retentionInterval: Duration.minutes(1),
  maxQueuedSpans: 100_000,
  maxSpansPerCommit: 8_000,
  maxCommitsInFlight: 2,
  tailQueueSpans: defaultTailLimits.maxQueuedSpans,
  tlsPort: 4321
} as const

/** A config with every default filled in; only the data directory is required. */
export const makeConfig = (
  dataDir: string,
  overrides: Partial<Omit<ObsNodeConfig, "dataDir">> = {}
): ObsNodeConfig => ({
  dataDir,
  port: defaults.port,
  host: defaults.host,
  token: Option.none(),
  retention: defaults.retention,
  retentionInterval: defaults.retentionInterval,
  maxFrameBytes: WireProtocol.defaultMaxFrameBytes,
  maxQueuedSpans: defaults.maxQueuedSpans,
  maxSpansPerCommit: defaults.maxSpansPerCommit,
  maxCommitsInFlight: defaults.maxCommitsInFlight,
  tailQueueSpans: defaults.tailQueueSpans,
  nodeId: hostname(),
  tls: Option.none(),
  ...overrides
})

/** Parses `7d`, `12h`, `30m`… into a Duration. */
export const parseRetention = (text: string): Either.Either<Duration.Duration, string> =>
  Either.mapBoth(parseDurationNano("retention", text), {
    onLeft: (e) => e.reason,
    onRight: (nanos) => Duration.nanos(BigInt(nanos))
  })

const durationConfig = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) =>
      Either.mapLeft(parseRetention(text), (reason) => ConfigError.InvalidData([name], reason))
    )
  )

/** Pairs an optional certificate and key file: both or neither; `Left` names the one missing. */
export const pairTls = (
  certFile: Option.Option<string>,
  keyFile: Option.Option<string>,
  port: number
): Either.Either<Option.Option<TlsConfig>, "certificate" | "key"> => {
  if (Option.isSome(certFile) && Option.isSome(keyFile))
    return Either.right(Option.some({ certFile: certFile.value, keyFile: keyFile.value, port }))
  if (Option.isSome(certFile)) return Either.left("key")
  if (Option.isSome(keyFile)) return Either.left("certificate")
  return Either.right(Option.none())
}

const tlsConfig: Config.Config<Option.Option<TlsConfig>> = Config.all({
  certFile: Config.option(Config.string("III_OBS_TLS_CERT")),
  keyFile: Config.option(Config.string("III_OBS_TLS_KEY")),
  port: Config.port("III_OBS_TLS_PORT").pipe(Config.withDefault(defaults.tlsPort))
}).pipe(
  Config.mapOrFail(({ certFile, keyFile, port }) =>
    Either.mapLeft(pairTls(certFile, keyFile, port), (missing) => {
      const name = missing === "key" ? "III_OBS_TLS_KEY" : "III_OBS_TLS_CERT"
      return ConfigError.MissingData(
        [name],
        `III_OBS_TLS_CERT and III_OBS_TLS_KEY go together: ${name} is not set`
      )
    })
  )
)

/**
 * Reads the config from the environment: III_OBS_DATA (required), III_OBS_PORT, III_OBS_HOST,
 * III_OBS_TOKEN or III_OBS_TOKEN_FILE, III_OBS_RETENTION (e.g. `7d`), and for the TLS listener
 * III_OBS_TLS_CERT + III_OBS_TLS_KEY (both or neither; default none) and III_OBS_TLS_PORT (default
 * 4321). Other defaults as in `ObsNodeConfig`.
 */
export const config: Config.Config<ObsNodeConfig> = Config.all({
  dataDir: Config.string("III_OBS_DATA"),
  port: Config.port("III_OBS_PORT").pipe(Config.withDefault(defaults.port)),
  host: Config.string("III_OBS_HOST").pipe(Config.withDefault(defaults.host)),
  token: Config.option(Config.redacted("III_OBS_TOKEN")),
  tokenFile: Config.option(Config.string("III_OBS_TOKEN_FILE")),
  retention: durationConfig("III_OBS_RETENTION").pipe(Config.withDefault(defaults.retention)),
  tls: tlsConfig
}).pipe(
  Config.mapOrFail(({ tokenFile, token, ...rest }) => {
    if (Option.isSome(token) || Option.isNone(tokenFile))
      return Either.right(makeConfig(rest.dataDir, { ...rest, token }))
    const read = readToken(tokenFile.value)
    return Either.isRight(read)
      ? Either.right(makeConfig(rest.dataDir, { ...rest, token: Option.some(read.right) }))
      : Either.left(ConfigError.InvalidData(["III_OBS_TOKEN_FILE"], read.left))
  })
)

/** Reads a token file: its content, trimmed; an empty file is an error. */
export const readToken = (path: string): Either.Either<Redacted.Redacted<string>, string> => {
  try {
    const token = readFileSync(path, "utf8").trim()
    return token.length === 0
      ? Either.left(`token file ${path} is empty`)
      : Either.right(Redacted.make(token))
  } catch (e) {
    return Either.left(`cannot read token file ${path}: ${e instanceof Error ? e.message : String(e)}`)
  }
}

export interface ObsNodeInfo {
  readonly host: string
  readonly port: number
  /** `http://host:port` (with 127.0.0.1 when bound to every interface). */
  readonly url: string
  /** The TLS listener, when configured: its port and `https://host:port`. */
  readonly tls: Option.Option<{ readonly port: number; readonly url: string }>
}

export class ObsNode extends Context.Tag("@iii/obs/ObsNode")<ObsNode, ObsNodeInfo>() {}

const listen = (server: HttpServer | HttpsServer, port: number, host: string, what: string) =>
  Effect.acquireRelease(
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
      })
  )

/** Starts a node for the layer's lifetime; stopping closes sockets, finishes pending commits, closes LMDB. */
export const layer = (cfg: ObsNodeConfig): Layer.Layer<ObsNode, StoreError | ServerError | TlsError> =>
  Layer.scoped(
    ObsNode,
    Effect.gen(function* () {
      // Before anything else: a bad certificate or key stops the node with the file named.
      const tls = yield* Effect.transposeMapOption(cfg.tls, (t) =>
        Effect.map(loadTlsCredentials(t.certFile, t.keyFile), (credentials) => ({
          port: t.port,
          credentials
        }))
      )
      const stores = yield* LmdbStore.make({ path: cfg.dataDir, writerThread: true })
      const counters = new NodeCounters()
      const tail = new TailHub({ ...defaultTailLimits, maxQueuedSpans: cfg.tailQueueSpans })
      const writer = new GroupCommit({
        // Planned on arrival, so the decoded spans die young; they are kept for the tail only while
        // it has subscribers (one subscribing meanwhile misses at most the batches already queued).
        prepare: (batch) => ({ plan: planBatch(batch), tailed: tail.size > 0 ? batch.spans : undefined }),
        write: (round) => Effect.runPromise(stores.rounds.writeRound(round.map((b) => b.plan))),
        committed: (round) => {
          const committedAt = performance.timeOrigin + performance.now()
          for (const { plan, tailed } of round) {
            counters.batchesStored++
            counters.spansStored += plan.spanCount
            counters.logsStored += plan.logs.length
            counters.metricsStored += plan.metrics.length
            if (tailed !== undefined && tailed.length > 0 && tail.size > 0) tail.publish(tailed, committedAt)
          }
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
      const servers = createNodeServers({
        settings: {
          nodeId: cfg.nodeId || randomUUID(),
          token: Option.getOrUndefined(token),
          maxFrameBytes: cfg.maxFrameBytes,
          maxStrikes: 5
        },
        reader: stores.reader,
        maintenance: stores.maintenance,
        writer,
        tail,
        counters,
        isReady: () => ready
      })
      const port = yield* listen(servers.http, cfg.port, cfg.host, "")
      const tlsListener = yield* Effect.transposeMapOption(tls, ({ port, credentials }) =>
        Effect.map(listen(servers.createTlsServer(credentials), port, cfg.host, "for TLS "), (bound) => ({
          port: bound,
          credentials
        }))
      )
      // Runs before the servers close: WebSockets get a 1001 close frame first.
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          ready = false
          servers.closeSockets()
        })
      )
      const retentionNanos = Duration.toNanos(cfg.retention).pipe(Option.getOrElse(() => 0n))
      yield* stores.maintenance.deleteOlderThan(BigInt(Date.now()) * 1_000_000n - retentionNanos).pipe(
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
        tls: Option.map(tlsListener, (t) => ({ port: t.port, url: `https://${shownHost}:${t.port}` }))
      }
      if (Option.isNone(token))
        yield* Effect.logWarning(
          "obs node started without a token: ingest, query and tail are open to anyone who can reach it"
        )
      const tlsNote = Option.match(tlsListener, {
        onNone: () => "",
        onSome: ({ port, credentials: c }) =>
          `, TLS on ${cfg.host}:${port} (certificate ${c.subject}, valid until ${c.validTo.toISOString()})`
      })
      if (Option.isSome(tlsListener) && tlsListener.value.credentials.validTo.getTime() < Date.now())
        yield* Effect.logWarning(`the TLS certificate has expired: clients will refuse it${tlsNote}`)
      yield* Effect.logInfo(`obs node listening on ${cfg.host}:${port}${tlsNote} (data in ${cfg.dataDir})`)
      return info
    })
  )

/** `layer` with the config read from the environment (see `config`). */
export const layerConfig: Layer.Layer<
  ObsNode,
  StoreError | ServerError | TlsError | ConfigError.ConfigError
> = Layer.unwrapEffect(Effect.map(config, layer))
