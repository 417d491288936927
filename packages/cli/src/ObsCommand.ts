/**
 * `iii obs`: runs one obs node (telemetry store, query API, live tail) until interrupted.
 *
 *   iii obs --data /var/lib/iii-obs --port 4320
 *   iii obs --data ./obs --port 4320 --host 127.0.0.1 --token-file /run/secrets/obs-token --retention 3d
 *   iii obs --data ./obs --tls-cert /tls/tls.crt --tls-key /tls/tls.key --tls-port 4321
 *   iii obs --data ./obs --otlp-grpc-port 0            # OTLP/HTTP only (OTLP/gRPC is on 4317 by default)
 *   iii obs --data ./obs --export-otlp http://collector:4318 --export-header authorization="Bearer $T"
 *   iii obs --data ./obs --advertise 10.0.0.1:4320 --peers 10.0.0.1:4320,10.0.0.2:4320,10.0.0.3:4320
 *   iii obs --data /data --advertise $(POD_NAME).iii-obs.iii-system.svc:4320 --peers-from-service iii-obs
 *
 * Every flag falls back to its III_OBS_* variable (what the StatefulSet in manifests/obs sets). Logs
 * the address it listens on. Without a token (`--token-file` or $III_OBS_TOKEN) it warns that ingest,
 * query and tail are open.
 */
import { Command, Options } from "@effect/cli"
import { ObsCluster, ObsNode, ObsNodeConfig } from "@iii/obs"
import { Effect, Layer, Option } from "effect"

const { defaults, variables } = ObsNodeConfig

// Text, not Options.directory: the node checks the directory itself and says what is wrong with it.
const data = Options.text("data").pipe(
  Options.optional,
  Options.withDescription(`directory of the LMDB store, created when missing (default $${variables.data})`)
)
const port = Options.integer("port").pipe(
  Options.optional,
  Options.withDescription(
    `TCP port for HTTP and WebSocket (default $${variables.port} or ${defaults.port}; 0 = any free port)`
  )
)
const host = Options.text("host").pipe(
  Options.optional,
  Options.withDescription(`interface to bind (default $${variables.host} or ${defaults.host})`)
)
const tokenFile = Options.file("token-file").pipe(
  Options.optional,
  Options.withDescription(
    `file holding the bearer token required for ingest, query and tail (default $${variables.token}, then $${variables.tokenFile})`
  )
)
const retention = Options.text("retention").pipe(
  Options.optional,
  Options.withDescription(
    `age after which data is deleted, e.g. 7d, 36h (default $${variables.retention} or 7d)`
  )
)
const tlsCert = Options.file("tls-cert").pipe(
  Options.optional,
  Options.withDescription(
    `PEM certificate of an extra HTTPS + WSS listener, read at start; needs --tls-key (default $${variables.tlsCert})`
  )
)
const tlsKey = Options.file("tls-key").pipe(
  Options.optional,
  Options.withDescription(`PEM private key of --tls-cert, read at start (default $${variables.tlsKey})`)
)
const tlsPort = Options.integer("tls-port").pipe(
  Options.optional,
  Options.withDescription(
    `port of the HTTPS + WSS listener (default $${variables.tlsPort} or ${defaults.tlsPort}; 0 = any free port)`
  )
)
const tlsClientCa = Options.file("tls-client-ca").pipe(
  Options.optional,
  Options.withDescription(
    `cluster: PEM CA of peers' client certificates; peers then talk over the TLS listener, --advertise and --peers name TLS ports (default $${variables.tlsClientCa})`
  )
)

const advertise = Options.text("advertise").pipe(
  Options.optional,
  Options.withDescription(
    `cluster: this node's HOST:PORT as its peers reach it, its identity on the ring (default $${variables.advertise})`
  )
)
const peers = Options.text("peers").pipe(
  Options.optional,
  Options.withDescription(
    `cluster: the members, HOST:PORT,HOST:PORT,… (this node's own address may be in it; default $${variables.peers})`
  )
)
const peersFromService = Options.text("peers-from-service").pipe(
  Options.optional,
  Options.withDescription(
    `cluster, in Kubernetes: the members are the ready endpoints of this headless Service, NAME or NAMESPACE/NAME (default $${variables.peersFromService})`
  )
)
const replication = Options.integer("replication").pipe(
  Options.optional,
  Options.withDescription(
    `cluster: owners per record, capped at the number of members (default $${variables.replication} or ${ObsNodeConfig.clusterDefaults.replication})`
  )
)
const heartbeatTimeout = Options.text("heartbeat-timeout").pipe(
  Options.optional,
  Options.withDescription(
    `cluster: a peer silent this long is down, e.g. 5s (default $${variables.heartbeatTimeout} or 5s)`
  )
)

const repairInterval = Options.text("repair-interval").pipe(
  Options.optional,
  Options.withDescription(
    `cluster: time between anti-entropy passes, e.g. 30s (default $${variables.repairInterval} or 30s)`
  )
)

const otlpGrpcPort = Options.integer("otlp-grpc-port").pipe(
  Options.optional,
  Options.withDescription(
    `port of the OTLP/gRPC listener (default $${variables.otlpGrpcPort} or ${defaults.otlpGrpcPort}; 0 = off; OTLP/HTTP is always on --port)`
  )
)

const exportOtlp = Options.text("export-otlp").pipe(
  Options.optional,
  Options.withDescription(
    `also forward every stored span, log and metric point to this OTLP/HTTP endpoint (POST URL/v1/traces|logs|metrics, protobuf), through a queue on disk (default $${variables.exportOtlp}; none)`
  )
)
const exportHeader = Options.text("export-header").pipe(
  Options.repeated,
  Options.withDescription(
    `a header K=V for --export-otlp, repeatable (default $${variables.exportHeaders}: K=V,K=V)`
  )
)

const flags = {
  data,
  port,
  host,
  tokenFile,
  retention,
  tlsCert,
  tlsKey,
  tlsPort,
  tlsClientCa,
  otlpGrpcPort,
  exportOtlp,
  exportHeader,
  advertise,
  peers,
  peersFromService,
  replication,
  heartbeatTimeout,
  repairInterval
}

export const command = Command.make("obs", flags, (given) =>
  Effect.gen(function* () {
    // ObsNodeConfig reads the III_OBS_* variables; flags given here win over them.
    const config = yield* ObsNodeConfig.load({
      data: Option.getOrUndefined(given.data),
      port: Option.getOrUndefined(given.port),
      host: Option.getOrUndefined(given.host),
      tokenFile: Option.getOrUndefined(given.tokenFile),
      retention: Option.getOrUndefined(given.retention),
      tlsCert: Option.getOrUndefined(given.tlsCert),
      tlsKey: Option.getOrUndefined(given.tlsKey),
      tlsPort: Option.getOrUndefined(given.tlsPort),
      tlsClientCa: Option.getOrUndefined(given.tlsClientCa),
      otlpGrpcPort: Option.getOrUndefined(given.otlpGrpcPort),
      exportOtlp: Option.getOrUndefined(given.exportOtlp),
      exportHeaders: given.exportHeader,
      advertise: Option.getOrUndefined(given.advertise),
      peers: Option.getOrUndefined(given.peers),
      peersFromService: Option.getOrUndefined(given.peersFromService),
      replication: Option.getOrUndefined(given.replication),
      heartbeatTimeout: Option.getOrUndefined(given.heartbeatTimeout),
      repairInterval: Option.getOrUndefined(given.repairInterval)
    })
    return yield* Layer.launch(
      Option.isSome(config.cluster) ? ObsCluster.layer(config) : ObsNode.layer(config)
    )
  })
).pipe(
  Command.withDescription(
    "Run an obs node: telemetry store, query API and live tail on one port (and over TLS on another); with --peers or --peers-from-service, one node of a replicated cluster"
  )
)
