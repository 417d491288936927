/**
 * One obs node as an Effect Layer: the LMDB store, group-committed ingest on `/v1/ingest`, the query
 * API, the live tail on `/v1/tail`, background retention, all on one port. `layer(config)` starts it
 * for the lifetime of the layer's scope; `ObsNode` (the service) tells where it listens.
 */
import { randomUUID } from "node:crypto"
import { readFileSync } from "node:fs"
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
import { ServerError, type StoreError } from "./Errors.js"
import { GroupCommit } from "./internal/GroupCommit.js"
import { NodeCounters } from "./internal/NodeCounters.js"
import { parseDurationNano } from "./internal/Params.js"
import { createNodeServer } from "./internal/Server.js"
import { defaultTailLimits, TailHub } from "./internal/TailHub.js"
import * as LmdbStore from "./LmdbStore.js"

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
  /** Most spans one ingest transaction takes (smaller rounds pipeline better with lmdb's commit thread). Default 2,000. */
  readonly maxSpansPerCommit: number
  /** Ingest transactions in flight at once (one builds while earlier ones commit). Default 4. */
  readonly maxCommitsInFlight: number
  /** Spans a tail subscriber may have waiting before new ones are dropped. Default 10,000. */
  readonly tailQueueSpans: number
  /** Name reported to agents in the welcome frame. Default: the host name. */
  readonly nodeId: string
}

export const defaults = {
  port: 4320,
  host: "0.0.0.0",
  retention: Duration.days(7),
  retentionInterval: Duration.minutes(1),
  maxQueuedSpans: 100_000,
  maxSpansPerCommit: 2_000,
  maxCommitsInFlight: 4,
  tailQueueSpans: defaultTailLimits.maxQueuedSpans
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

/**
 * Reads the config from the environment: III_OBS_DATA (required), III_OBS_PORT, III_OBS_HOST,
 * III_OBS_TOKEN or III_OBS_TOKEN_FILE, III_OBS_RETENTION (e.g. `7d`). Defaults as in `ObsNodeConfig`.
 */
export const config: Config.Config<ObsNodeConfig> = Config.all({
  dataDir: Config.string("III_OBS_DATA"),
  port: Config.port("III_OBS_PORT").pipe(Config.withDefault(defaults.port)),
  host: Config.string("III_OBS_HOST").pipe(Config.withDefault(defaults.host)),
  token: Config.option(Config.redacted("III_OBS_TOKEN")),
  tokenFile: Config.option(Config.string("III_OBS_TOKEN_FILE")),
  retention: durationConfig("III_OBS_RETENTION").pipe(Config.withDefault(defaults.retention))
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
}

export class ObsNode extends Context.Tag("@iii/obs/ObsNode")<ObsNode, ObsNodeInfo>() {}

/** Starts a node for the layer's lifetime; stopping closes sockets, finishes pending commits, closes LMDB. */
export const layer = (cfg: ObsNodeConfig): Layer.Layer<ObsNode, StoreError | ServerError> =>
  Layer.scoped(
    ObsNode,
    Effect.gen(function* () {
      const stores = yield* LmdbStore.make({ path: cfg.dataDir, writerThread: true })
      const counters = new NodeCounters()
      const tail = new TailHub({ ...defaultTailLimits, maxQueuedSpans: cfg.tailQueueSpans })
      const writer = new GroupCommit({
        write: (batches) => Effect.runPromise(stores.writer.write(batches)),
        committed: (batches) => {
          const committedAt = performance.timeOrigin + performance.now()
          for (const b of batches) {
            counters.batchesStored++
            counters.spansStored += b.spans.length
            counters.logsStored += b.logs.length
            counters.metricsStored += b.metrics.length
            if (tail.size > 0 && b.spans.length > 0) tail.publish(b.spans, committedAt)
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
      const { server, closeSockets } = createNodeServer({
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
      const address = yield* Effect.acquireRelease(
        Effect.async<{ host: string; port: number }, ServerError>((resume) => {
          const onError = (cause: Error) =>
            resume(
              Effect.fail(
                new ServerError({
                  reason: `cannot listen on ${cfg.host}:${cfg.port}: ${cause.message}`,
                  cause
                })
              )
            )
          server.once("error", onError)
          server.listen(cfg.port, cfg.host, () => {
            server.off("error", onError)
            const a = server.address()
            resume(
              Effect.succeed({
                host: cfg.host,
                port: typeof a === "object" && a !== null ? a.port : cfg.port
              })
            )
          })
        }),
        () =>
          Effect.async<void>((resume) => {
            ready = false
            closeSockets()
            server.close(() => resume(Effect.void))
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
      const shownHost = address.host === "0.0.0.0" || address.host === "::" ? "127.0.0.1" : address.host
      const info: ObsNodeInfo = {
        host: address.host,
        port: address.port,
        url: `http://${shownHost}:${address.port}`
      }
      if (Option.isNone(token))
        yield* Effect.logWarning(
          "obs node started without a token: ingest, query and tail are open to anyone who can reach it"
        )
      yield* Effect.logInfo(`obs node listening on ${address.host}:${address.port} (data in ${cfg.dataDir})`)
      return info
    })
  )

/** `layer` with the config read from the environment (see `config`). */
export const layerConfig: Layer.Layer<ObsNode, StoreError | ServerError | ConfigError.ConfigError> =
  Layer.unwrapEffect(Effect.map(config, layer))
