/**
 * An obs node's settings: `ObsNodeConfig`, its defaults, and the one reader of the `III_OBS_*`
 * environment variables. `iii obs` hands its flags to `load`, which takes each flag given over its
 * variable and each variable set over its default, so the command and an embedding program read the
 * environment the same way (the StatefulSet in `manifests/obs` configures nodes through it).
 */
import { hostname } from "node:os"
import { Errors, WireProtocol } from "@iii/core"
import { Config, ConfigError, Duration, Effect, Either, Option, Redacted } from "effect"
import { InvalidSetting } from "./Errors.js"
import { parseDurationNano } from "./internal/node/Params.js"
import { readSettingsFile } from "./internal/node/SettingsFile.js"
import { defaultTailLimits } from "./internal/node/TailHub.js"

export interface TlsConfig {
  /** PEM certificate file (leaf first, then any intermediates). */
  readonly certFile: string
  /** PEM private key file (unencrypted) of that certificate. */
  readonly keyFile: string
  /** Port of the HTTPS + WSS listener; 0 picks a free one. Default 4321. */
  readonly port: number
  /**
   * PEM file of the CA that signs cluster peers' client certificates: the cluster then runs over this
   * listener (peers dial `wss://`, presenting the node's certificate and key, and check each other's
   * against this CA), and a `/v1/peer` upgrade with a certificate it signed is admitted without the
   * token. Default: none (peers authenticate with the token only).
   */
  readonly clientCaFile?: string | undefined
}

/** Where a cluster node finds its members. */
export type PeerSource =
  /** A fixed list of HOST:PORT (this node's own address may be in it); nodes may join by saying so. */
  | { readonly _tag: "Static"; readonly peers: ReadonlyArray<string> }
  /** The ready endpoints of a Kubernetes Service (`NAME` or `NAMESPACE/NAME`), watched. */
  | { readonly _tag: "Service"; readonly service: string }

export interface ClusterConfig {
  /** This node's address as its peers reach it, HOST:PORT (its identity on the ring). */
  readonly advertise: string
  readonly peers: PeerSource
  /** Owners per record, capped at the number of members. Default 3. */
  readonly replication: number
  /** Time between heartbeats. Default 1 s. */
  readonly heartbeatInterval: Duration.Duration
  /** A peer that answers nothing for this long is down. Default 5 s. */
  readonly heartbeatTimeout: Duration.Duration
  /** Time between anti-entropy passes. Default 30 s. */
  readonly repairInterval: Duration.Duration
  /**
   * With `Service`: how long a member missing from the endpoints stays a member (down) before it is
   * removed and its data moves; a restarting pod is back well within it. Default 10 minutes.
   */
  readonly removalGrace: Duration.Duration
}

export const clusterDefaults = {
  replication: 3,
  heartbeatInterval: Duration.seconds(1),
  heartbeatTimeout: Duration.seconds(5),
  repairInterval: Duration.seconds(30),
  removalGrace: Duration.minutes(10)
} as const

/** A cluster config with every default filled in. */
export const makeClusterConfig = (
  advertise: string,
  peers: PeerSource,
  overrides: Partial<Omit<ClusterConfig, "advertise" | "peers">> = {}
): ClusterConfig => ({ advertise, peers, ...clusterDefaults, ...overrides })

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
  /**
   * How often the node checks that its store can still keep what it acknowledges (for LMDB: the
   * data directory and files are the ones it opened); the store also checks after every round,
   * before it is acknowledged. Default 1 s.
   */
  readonly storeCheckInterval: Duration.Duration
  /**
   * How far ahead of the node's clock an item may be dated (spans must also have ended by then);
   * later ones, and ones older than `retention`, make their batch `invalid_batch`. Default 1 hour.
   */
  readonly maxClockSkew: Duration.Duration
  /**
   * Largest ingest frame accepted, and largest OTLP request body (as sent and as inflated). Default:
   * core's `defaultMaxFrameBytes` (16 MiB).
   */
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
  /**
   * How long a tail subscriber may keep its socket's send buffer full (it stopped reading) before
   * the node closes it. Default 30 s.
   */
  readonly tailStallTimeout: Duration.Duration
  /** Tail subscribers at once; more are answered 503. Default 64. */
  readonly maxTailSubscribers: number
  /** Ingest connections at once; more are answered 503. Default 4,096. */
  readonly maxIngestConnections: number
  /** Node-to-node (`/v1/peer`) connections at once, in a cluster; more are answered 503. Default 1,024. */
  readonly maxPeerConnections: number
  /** Time a new ingest connection has to send hello before it is closed. Default 10 s. */
  readonly helloTimeout: Duration.Duration
  /**
   * Every WebSocket is pinged this often; one from which nothing arrived for a whole interval (no
   * pong, no data) is closed. Default 30 s.
   */
  readonly pingInterval: Duration.Duration
  /** Name reported to agents in the welcome frame. Default: the host name. */
  readonly nodeId: string
  /**
   * A second listener, on the same host, serving everything above over HTTPS and WSS (the Kubernetes
   * aggregator reaches the External Metrics API only over HTTPS). The files are read once, at start:
   * rotate them by restarting the node. Default: none.
   */
  readonly tls: Option.Option<TlsConfig>
  /** The dashboard's built files. Default: the package's own (`dist/dashboard`, made by `npm run build`). */
  readonly dashboardDir?: string | undefined
  /** Run as a node of a cluster (`ObsCluster`); `ObsNode.layer` ignores it. Default: none. */
  readonly cluster: Option.Option<ClusterConfig>
  /**
   * Port of the OTLP/gRPC listener (same host, same token, plaintext); 0 turns it off. `iii obs`
   * (`load`) listens on `defaults.otlpGrpcPort` (4317, OTLP's port) unless told otherwise; `makeConfig`
   * leaves it off, so an embedding program opts in. OTLP/HTTP is always on the node's port.
   */
  readonly otlpGrpcPort: number
  /** Forward every stored span, log record and metric point to an OTLP/HTTP endpoint. Default: none. */
  readonly exportOtlp: Option.Option<OtlpExportConfig>
}

/** Where and how stored telemetry is forwarded over OTLP/HTTP (README, "OpenTelemetry (OTLP) out"). */
export interface OtlpExportConfig {
  /** The endpoint's base URL; requests go to `{url}/v1/traces`, `/v1/logs`, `/v1/metrics`. */
  readonly url: string
  /** Headers sent with every request (e.g. `authorization`), in order. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  /** Bytes the persistent queue (`{dataDir}/otlp-export`) may hold; past it the oldest requests are dropped. Default 256 MiB. */
  readonly maxQueueBytes: number
  /** First wait before a retry; it doubles on each failure up to `maxBackoff`. Default 1 s. */
  readonly initialBackoff: Duration.Duration
  /** Longest wait between retries (a longer `Retry-After` is honoured up to 5 minutes). Default 1 minute. */
  readonly maxBackoff: Duration.Duration
  /** Time a request may take before it is retried. Default 10 s. */
  readonly requestTimeout: Duration.Duration
}

export const exportDefaults = {
  maxQueueBytes: 256 * 1024 * 1024,
  initialBackoff: Duration.seconds(1),
  maxBackoff: Duration.minutes(1),
  requestTimeout: Duration.seconds(10)
} as const

/** An export config with every default filled in. */
export const makeExportConfig = (
  url: string,
  overrides: Partial<Omit<OtlpExportConfig, "url">> = {}
): OtlpExportConfig => ({ url: url.replace(/\/+$/, ""), headers: [], ...exportDefaults, ...overrides })

/** An OTLP/HTTP base URL (http or https), or why it is not one. */
export const parseExportUrl = (text: string): Either.Either<string, string> => {
  try {
    const url = new URL(text.trim())
    return url.protocol === "http:" || url.protocol === "https:"
      ? Either.right(text.trim().replace(/\/+$/, ""))
      : Either.left(`${text} is not an http:// or https:// URL`)
  } catch {
    return Either.left(`${text} is not a URL`)
  }
}

/** `K=V` as a header, or why it is not one. */
export const parseExportHeader = (text: string): Either.Either<readonly [string, string], string> => {
  const at = text.indexOf("=")
  const key = at < 0 ? "" : text.slice(0, at).trim()
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(key)
    ? Either.right([key, text.slice(at + 1).trim()] as const)
    : Either.left(`${JSON.stringify(text)} is not a header K=V`)
}

export const defaults = {
  port: 4320,
  host: "0.0.0.0",
  retention: Duration.days(7),
  retentionInterval: Duration.minutes(1),
  storeCheckInterval: Duration.seconds(1),
  maxClockSkew: Duration.hours(1),
  maxQueuedSpans: 100_000,
  maxSpansPerCommit: 8_000,
  maxCommitsInFlight: 2,
  tailQueueSpans: defaultTailLimits.maxQueuedSpans,
  tailStallTimeout: Duration.millis(defaultTailLimits.maxStalledMs),
  maxTailSubscribers: 64,
  maxIngestConnections: 4_096,
  maxPeerConnections: 1_024,
  helloTimeout: Duration.seconds(10),
  pingInterval: Duration.seconds(30),
  tlsPort: 4321,
  otlpGrpcPort: 4317
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
  storeCheckInterval: defaults.storeCheckInterval,
  maxClockSkew: defaults.maxClockSkew,
  maxFrameBytes: WireProtocol.defaultMaxFrameBytes,
  maxQueuedSpans: defaults.maxQueuedSpans,
  maxSpansPerCommit: defaults.maxSpansPerCommit,
  maxCommitsInFlight: defaults.maxCommitsInFlight,
  tailQueueSpans: defaults.tailQueueSpans,
  tailStallTimeout: defaults.tailStallTimeout,
  maxTailSubscribers: defaults.maxTailSubscribers,
  maxIngestConnections: defaults.maxIngestConnections,
  maxPeerConnections: defaults.maxPeerConnections,
  helloTimeout: defaults.helloTimeout,
  pingInterval: defaults.pingInterval,
  nodeId: hostname(),
  tls: Option.none(),
  cluster: Option.none(),
  otlpGrpcPort: 0,
  exportOtlp: Option.none(),
  ...overrides
})

/** Parses `7d`, `12h`, `30m`… into a Duration. */
export const parseRetention = (text: string): Either.Either<Duration.Duration, string> =>
  Either.mapBoth(parseDurationNano("retention", text), {
    onLeft: (e) => e.reason,
    onRight: (nanos) => Duration.nanos(BigInt(nanos))
  })

/** Reads a token file: its content, trimmed; an empty file is an error. */
export const readToken = (path: string): Either.Either<Redacted.Redacted<string>, string> => {
  try {
    const token = readSettingsFile(path).toString("utf8").trim()
    return token.length === 0
      ? Either.left(`token file ${path} is empty`)
      : Either.right(Redacted.make(token))
  } catch (e) {
    return Either.left(`cannot read token file ${path}: ${Errors.messageOf(e)}`)
  }
}

/** What `iii obs` was given on its command line; each flag given wins over its variable. */
export interface Flags {
  readonly data?: string | undefined
  readonly port?: number | undefined
  readonly host?: string | undefined
  readonly tokenFile?: string | undefined
  readonly retention?: string | undefined
  readonly tlsCert?: string | undefined
  readonly tlsKey?: string | undefined
  readonly tlsPort?: number | undefined
  /** CA of cluster peers' client certificates (needs tlsCert and tlsKey). */
  readonly tlsClientCa?: string | undefined
  /** 0 turns OTLP/gRPC off. */
  readonly otlpGrpcPort?: number | undefined
  /** OTLP/HTTP base URL to forward stored telemetry to. */
  readonly exportOtlp?: string | undefined
  /** `K=V` headers for it (the variable: K=V,K=V). */
  readonly exportHeaders?: ReadonlyArray<string> | undefined
  readonly advertise?: string | undefined
  /** HOST:PORT,HOST:PORT,… */
  readonly peers?: string | undefined
  readonly peersFromService?: string | undefined
  readonly replication?: number | undefined
  /** A duration: `5s`, `1500ms`. */
  readonly heartbeatTimeout?: string | undefined
  /** A duration: `30s`. */
  readonly repairInterval?: string | undefined
}

/** The variable behind each setting (the token has two: the token itself, then a file holding it). */
export const variables = {
  data: "III_OBS_DATA",
  port: "III_OBS_PORT",
  host: "III_OBS_HOST",
  token: "III_OBS_TOKEN",
  tokenFile: "III_OBS_TOKEN_FILE",
  retention: "III_OBS_RETENTION",
  tlsCert: "III_OBS_TLS_CERT",
  tlsKey: "III_OBS_TLS_KEY",
  tlsPort: "III_OBS_TLS_PORT",
  tlsClientCa: "III_OBS_TLS_CLIENT_CA",
  otlpGrpcPort: "III_OBS_OTLP_GRPC_PORT",
  exportOtlp: "III_OBS_EXPORT_OTLP",
  exportHeaders: "III_OBS_EXPORT_HEADERS",
  exportQueueBytes: "III_OBS_EXPORT_QUEUE_BYTES",
  advertise: "III_OBS_ADVERTISE",
  peers: "III_OBS_PEERS",
  peersFromService: "III_OBS_PEERS_FROM_SERVICE",
  replication: "III_OBS_REPLICATION",
  heartbeatTimeout: "III_OBS_HEARTBEAT_TIMEOUT",
  repairInterval: "III_OBS_REPAIR_INTERVAL",
  // Limits (README, "Limits"); no flags: set them in the environment.
  maxClockSkew: "III_OBS_MAX_CLOCK_SKEW",
  helloTimeout: "III_OBS_HELLO_TIMEOUT",
  pingInterval: "III_OBS_PING_INTERVAL",
  tailStallTimeout: "III_OBS_TAIL_STALL_TIMEOUT",
  maxIngestConnections: "III_OBS_MAX_INGEST_CONNECTIONS",
  maxTailSubscribers: "III_OBS_MAX_TAIL_SUBSCRIBERS",
  maxPeerConnections: "III_OBS_MAX_PEER_CONNECTIONS"
} as const

type Environment = { readonly [K in keyof typeof variables]: string | undefined }

const environment: Config.Config<Environment> = Config.all(
  Object.fromEntries(
    Object.entries(variables).map(([key, name]) => [
      key,
      Config.option(Config.string(name)).pipe(Config.map(Option.getOrUndefined))
    ])
  ) as { readonly [K in keyof typeof variables]: Config.Config<string | undefined> }
)

const flagNames: { readonly [K in keyof Flags]-?: string } = {
  data: "--data",
  port: "--port",
  host: "--host",
  tokenFile: "--token-file",
  retention: "--retention",
  tlsCert: "--tls-cert",
  tlsKey: "--tls-key",
  tlsPort: "--tls-port",
  tlsClientCa: "--tls-client-ca",
  otlpGrpcPort: "--otlp-grpc-port",
  exportOtlp: "--export-otlp",
  exportHeaders: "--export-header",
  advertise: "--advertise",
  peers: "--peers",
  peersFromService: "--peers-from-service",
  replication: "--replication",
  heartbeatTimeout: "--heartbeat-timeout",
  repairInterval: "--repair-interval"
}

/** A setting's value and where it came from (the flag or the variable), to name it in errors. */
interface Given<A> {
  readonly value: A
  readonly from: string
}

const parsePort = (from: string, value: string | number): Either.Either<number, InvalidSetting> => {
  const port = typeof value === "number" ? value : /^\d+$/.test(value.trim()) ? Number(value) : Number.NaN
  return Number.isInteger(port) && port >= 0 && port <= 65535
    ? Either.right(port)
    : Either.left(new InvalidSetting({ setting: from, reason: `${value} is not a port number` }))
}

/** The limits set in the environment, each parsed and named by its variable when wrong. */
const limitsFrom = (
  env: Environment
): Either.Either<Partial<Omit<ObsNodeConfig, "dataDir">>, InvalidSetting> =>
  Either.gen(function* () {
    const duration = (key: "maxClockSkew" | "helloTimeout" | "pingInterval" | "tailStallTimeout") => {
      const text = env[key]
      if (text === undefined) return Either.right({})
      return Either.mapBoth(parseDurationNano(variables[key], text), {
        onLeft: (e) => new InvalidSetting({ setting: variables[key], reason: e.reason }),
        onRight: (nanos) => ({ [key]: Duration.nanos(BigInt(nanos)) })
      })
    }
    const count = (key: "maxIngestConnections" | "maxTailSubscribers" | "maxPeerConnections") => {
      const text = env[key]
      if (text === undefined) return Either.right({})
      const n = /^\d+$/.test(text.trim()) ? Number(text) : Number.NaN
      return Number.isSafeInteger(n) && n >= 1
        ? Either.right({ [key]: n })
        : Either.left(
            new InvalidSetting({ setting: variables[key], reason: `${text} is not a positive integer` })
          )
    }
    return {
      ...(yield* duration("maxClockSkew")),
      ...(yield* duration("helloTimeout")),
      ...(yield* duration("pingInterval")),
      ...(yield* duration("tailStallTimeout")),
      ...(yield* count("maxIngestConnections")),
      ...(yield* count("maxTailSubscribers")),
      ...(yield* count("maxPeerConnections"))
    }
  })

/**
 * Settings from flags over variables over defaults. Left names the flag or variable at fault:
 * `--retention: 7x is not a duration…`, `III_OBS_TLS_KEY: …`.
 */
export const resolve = (flags: Flags, env: Environment): Either.Either<ObsNodeConfig, InvalidSetting> =>
  Either.gen(function* () {
    const given = <K extends keyof Flags & keyof Environment>(
      key: K
    ): Given<NonNullable<Flags[K]> | string> | undefined =>
      flags[key] !== undefined
        ? { value: flags[key], from: flagNames[key] }
        : env[key] !== undefined
          ? { value: env[key], from: variables[key] }
          : undefined
    const data = given("data")
    if (data === undefined)
      return yield* Either.left(
        new InvalidSetting({
          setting: "--data",
          reason: `the data directory is required (or ${variables.data})`
        })
      )
    const port = given("port")
    const tlsPort = given("tlsPort")
    const otlpGrpcPort = given("otlpGrpcPort")
    const retention = given("retention")
    const invalid = (from: string) => (reason: string) => new InvalidSetting({ setting: from, reason })
    const kept =
      retention === undefined
        ? defaults.retention
        : yield* Either.mapLeft(parseRetention(String(retention.value)), invalid(retention.from))
    const cert = given("tlsCert")
    const key = given("tlsKey")
    if ((cert === undefined) !== (key === undefined)) {
      const missing = cert === undefined ? "tlsCert" : "tlsKey"
      return yield* Either.left(
        new InvalidSetting({
          setting: flagNames[missing],
          reason: `--tls-cert and --tls-key go together: ${flagNames[missing]} is missing (nor is ${variables[missing]} set)`
        })
      )
    }
    const clientCa = given("tlsClientCa")
    if (clientCa !== undefined && cert === undefined)
      return yield* Either.left(
        new InvalidSetting({
          setting: clientCa.from,
          reason: `peer client certificates are checked on the TLS listener: give ${flagNames.tlsCert} and ${flagNames.tlsKey} too (or ${variables.tlsCert} and ${variables.tlsKey})`
        })
      )
    // The token: the flag's file, else III_OBS_TOKEN, else the file III_OBS_TOKEN_FILE names.
    const tokenFile =
      flags.tokenFile !== undefined
        ? { value: flags.tokenFile, from: flagNames.tokenFile }
        : env.token === undefined && env.tokenFile !== undefined
          ? { value: env.tokenFile, from: variables.tokenFile }
          : undefined
    const token =
      tokenFile !== undefined
        ? Option.some(yield* Either.mapLeft(readToken(tokenFile.value), invalid(tokenFile.from)))
        : Option.map(Option.fromNullable(env.token), Redacted.make)
    const tls =
      cert !== undefined && key !== undefined
        ? Option.some({
            certFile: String(cert.value),
            keyFile: String(key.value),
            port: tlsPort === undefined ? defaults.tlsPort : yield* parsePort(tlsPort.from, tlsPort.value),
            ...(clientCa !== undefined && { clientCaFile: String(clientCa.value) })
          })
        : Option.none()
    const cluster = yield* resolveCluster(
      given,
      port === undefined ? defaults.port : yield* parsePort(port.from, port.value)
    )
    const exportOtlp = yield* resolveExport(flags, env)
    return makeConfig(String(data.value), {
      ...(yield* limitsFrom(env)),
      port: port === undefined ? defaults.port : yield* parsePort(port.from, port.value),
      host: String(given("host")?.value ?? defaults.host),
      retention: kept,
      token,
      tls,
      cluster,
      otlpGrpcPort:
        otlpGrpcPort === undefined
          ? defaults.otlpGrpcPort
          : yield* parsePort(otlpGrpcPort.from, otlpGrpcPort.value),
      exportOtlp
    })
  })

/** The OTLP export: the URL, its headers (flags over the variable) and the queue's bound. */
const resolveExport = (
  flags: Flags,
  env: Environment
): Either.Either<Option.Option<OtlpExportConfig>, InvalidSetting> =>
  Either.gen(function* () {
    const [text, from] =
      flags.exportOtlp !== undefined
        ? [flags.exportOtlp, flagNames.exportOtlp]
        : [env.exportOtlp, variables.exportOtlp]
    const headers =
      flags.exportHeaders !== undefined && flags.exportHeaders.length > 0
        ? { list: flags.exportHeaders, from: flagNames.exportHeaders }
        : {
            list: (env.exportHeaders ?? "").split(",").filter((h) => h.trim().length > 0),
            from: variables.exportHeaders
          }
    const invalid = (setting: string) => (reason: string) => new InvalidSetting({ setting, reason })
    if (text === undefined || text.trim() === "") {
      if (headers.list.length > 0)
        return yield* Either.left(
          invalid(headers.from)(`export headers need ${flagNames.exportOtlp} (or ${variables.exportOtlp})`)
        )
      return Option.none()
    }
    const url = yield* Either.mapLeft(parseExportUrl(text), invalid(from))
    const parsed = yield* Either.all(
      headers.list.map((h) => Either.mapLeft(parseExportHeader(h), invalid(headers.from)))
    )
    const bytesText = env.exportQueueBytes
    const maxQueueBytes = bytesText === undefined ? exportDefaults.maxQueueBytes : Number(bytesText.trim())
    if (
      bytesText !== undefined &&
      (!/^\d+$/.test(bytesText.trim()) || !Number.isSafeInteger(maxQueueBytes) || maxQueueBytes < 1)
    )
      return yield* Either.left(
        invalid(variables.exportQueueBytes)(`${bytesText} is not a positive number of bytes`)
      )
    return Option.some(makeExportConfig(url, { headers: parsed, maxQueueBytes }))
  })

/** A node address: HOST:PORT, the host a name, IPv4 or [IPv6]. */
const addressPattern = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/

const parseAddress = (from: string, text: string): Either.Either<string, InvalidSetting> => {
  const m = addressPattern.exec(text.trim())
  return m !== null && Number(m[2]) <= 65535 && Number(m[2]) > 0
    ? Either.right(text.trim())
    : Either.left(new InvalidSetting({ setting: from, reason: `${text} is not HOST:PORT` }))
}

type Lookup = <K extends keyof Flags & keyof Environment>(
  key: K
) => Given<NonNullable<Flags[K]> | string> | undefined

const resolveCluster = (
  given: Lookup,
  port: number
): Either.Either<Option.Option<ClusterConfig>, InvalidSetting> =>
  Either.gen(function* () {
    const peers = given("peers")
    const service = given("peersFromService")
    if (peers === undefined && service === undefined) return Option.none()
    if (peers !== undefined && service !== undefined)
      return yield* Either.left(
        new InvalidSetting({
          setting: peers.from,
          reason: `give either ${flagNames.peers} or ${flagNames.peersFromService}, not both`
        })
      )
    const advertise = given("advertise")
    if (advertise === undefined)
      return yield* Either.left(
        new InvalidSetting({
          setting: flagNames.advertise,
          reason: `a cluster node needs the HOST:PORT its peers reach it at (or ${variables.advertise}), e.g. 10.0.0.5:${port}`
        })
      )
    const self = yield* parseAddress(advertise.from, String(advertise.value))
    const source: PeerSource =
      peers !== undefined
        ? {
            _tag: "Static",
            peers: yield* Either.all(
              String(peers.value)
                .split(",")
                .map((p) => p.trim())
                .filter((p) => p.length > 0)
                .map((p) => parseAddress(peers.from, p))
            )
          }
        : { _tag: "Service", service: String(service?.value) }
    const replication = given("replication")
    const factor = replication === undefined ? clusterDefaults.replication : Number(replication.value)
    if (replication !== undefined && (!Number.isInteger(factor) || factor < 1 || factor > 7))
      return yield* Either.left(
        new InvalidSetting({
          setting: replication.from,
          reason: `${replication.value} is not a replication factor (1–7)`
        })
      )
    const duration = (key: "heartbeatTimeout" | "repairInterval") => {
      const text = given(key)
      return text === undefined
        ? Either.right(clusterDefaults[key])
        : Either.mapLeft(
            parseRetention(String(text.value)),
            (reason) => new InvalidSetting({ setting: text.from, reason })
          )
    }
    return Option.some(
      makeClusterConfig(self, source, {
        replication: factor,
        heartbeatTimeout: yield* duration("heartbeatTimeout"),
        repairInterval: yield* duration("repairInterval")
      })
    )
  })

/** The settings from `flags` over the environment's `III_OBS_*` variables over the defaults. */
export const load = (
  flags: Flags = {}
): Effect.Effect<ObsNodeConfig, InvalidSetting | ConfigError.ConfigError> =>
  Effect.flatMap(environment, (env) => resolve(flags, env))

/**
 * The settings from the environment alone: III_OBS_DATA (required), III_OBS_PORT, III_OBS_HOST,
 * III_OBS_TOKEN or III_OBS_TOKEN_FILE, III_OBS_RETENTION (e.g. `7d`), and for the TLS listener
 * III_OBS_TLS_CERT + III_OBS_TLS_KEY (both or neither; default none), III_OBS_TLS_PORT (default
 * 4321) and III_OBS_TLS_CLIENT_CA (the CA of cluster peers' client certificates). Other defaults as in `ObsNodeConfig`.
 */
export const config: Config.Config<ObsNodeConfig> = environment.pipe(
  Config.mapOrFail((env) =>
    Either.mapLeft(resolve({}, env), (e) =>
      env.data === undefined
        ? ConfigError.MissingData([variables.data], e.reason)
        : ConfigError.InvalidData([e.setting], e.reason)
    )
  )
)
