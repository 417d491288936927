/**
 * `iii obs`: runs one obs node (telemetry store, query API, live tail) until interrupted.
 *
 *   iii obs --data /var/lib/iii-obs --port 4320
 *   iii obs --data ./obs --port 4320 --host 127.0.0.1 --token-file /run/secrets/obs-token --retention 3d
 *   iii obs --data ./obs --tls-cert /tls/tls.crt --tls-key /tls/tls.key --tls-port 4321
 *
 * Every flag falls back to its III_OBS_* variable (what the StatefulSet in manifests/obs sets). Logs
 * the address it listens on. Without a token (`--token-file` or $III_OBS_TOKEN) it warns that ingest,
 * query and tail are open.
 */
import { Command, Options } from "@effect/cli"
import { ObsNode, ObsNodeConfig } from "@iii/obs"
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

const flags = { data, port, host, tokenFile, retention, tlsCert, tlsKey, tlsPort }

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
      tlsPort: Option.getOrUndefined(given.tlsPort)
    })
    return yield* Layer.launch(ObsNode.layer(config))
  })
).pipe(
  Command.withDescription(
    "Run an obs node: telemetry store, query API and live tail on one port (and over TLS on another)"
  )
)
