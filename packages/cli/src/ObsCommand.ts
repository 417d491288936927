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
import { Errors, ObsNode } from "@iii/obs"
import { Config, Effect, Either, Layer, Option } from "effect"

const data = Options.directory("data").pipe(
  Options.withFallbackConfig(Config.string("III_OBS_DATA")),
  Options.withDescription("directory of the LMDB store, created when missing (default $III_OBS_DATA)")
)
const port = Options.integer("port").pipe(
  Options.withFallbackConfig(Config.integer("III_OBS_PORT")),
  Options.withDefault(ObsNode.defaults.port),
  Options.withDescription(
    `TCP port for HTTP and WebSocket (default $III_OBS_PORT or ${ObsNode.defaults.port}; 0 = any free port)`
  )
)
const host = Options.text("host").pipe(
  Options.withFallbackConfig(Config.string("III_OBS_HOST")),
  Options.withDefault(ObsNode.defaults.host),
  Options.withDescription(`interface to bind (default $III_OBS_HOST or ${ObsNode.defaults.host})`)
)
const tokenFile = Options.file("token-file").pipe(
  Options.optional,
  Options.withDescription(
    "file holding the bearer token required for ingest, query and tail (default $III_OBS_TOKEN, then $III_OBS_TOKEN_FILE)"
  )
)
const retention = Options.text("retention").pipe(
  Options.withFallbackConfig(Config.string("III_OBS_RETENTION")),
  Options.withDefault("7d"),
  Options.withDescription("age after which data is deleted, e.g. 7d, 36h (default $III_OBS_RETENTION or 7d)")
)
const tlsCert = Options.file("tls-cert").pipe(
  Options.withFallbackConfig(Config.string("III_OBS_TLS_CERT")),
  Options.optional,
  Options.withDescription(
    "PEM certificate of an extra HTTPS + WSS listener, read at start; needs --tls-key (default $III_OBS_TLS_CERT)"
  )
)
const tlsKey = Options.file("tls-key").pipe(
  Options.withFallbackConfig(Config.string("III_OBS_TLS_KEY")),
  Options.optional,
  Options.withDescription("PEM private key of --tls-cert, read at start (default $III_OBS_TLS_KEY)")
)
const tlsPort = Options.integer("tls-port").pipe(
  Options.withFallbackConfig(Config.integer("III_OBS_TLS_PORT")),
  Options.withDefault(ObsNode.defaults.tlsPort),
  Options.withDescription(
    `port of the HTTPS + WSS listener (default $III_OBS_TLS_PORT or ${ObsNode.defaults.tlsPort}; 0 = any free port)`
  )
)

const fail = (reason: string) => Effect.fail(new Errors.ServerError({ reason }))
const isPort = (n: number) => Number.isInteger(n) && n >= 0 && n <= 65535

export const command = Command.make(
  "obs",
  { data, port, host, tokenFile, retention, tlsCert, tlsKey, tlsPort },
  ({ data, port, host, tokenFile, retention, tlsCert, tlsKey, tlsPort }) =>
    Effect.gen(function* () {
      if (!isPort(port)) return yield* fail(`--port: ${port} is not a port number`)
      if (!isPort(tlsPort)) return yield* fail(`--tls-port: ${tlsPort} is not a port number`)
      const tls = ObsNode.pairTls(tlsCert, tlsKey, tlsPort)
      if (Either.isLeft(tls))
        return yield* fail(
          `--tls-cert and --tls-key go together: --tls-${tls.left === "key" ? "key" : "cert"} is missing`
        )
      const kept = ObsNode.parseRetention(retention)
      if (Either.isLeft(kept)) return yield* fail(`--retention: ${kept.left}`)
      // The flag, then the variables in ObsNode.config's order: III_OBS_TOKEN before III_OBS_TOKEN_FILE.
      const envToken = yield* Config.option(Config.redacted("III_OBS_TOKEN"))
      const envTokenFile = yield* Config.option(Config.string("III_OBS_TOKEN_FILE"))
      const file = Option.isSome(tokenFile) || Option.isSome(envToken) ? tokenFile : envTokenFile
      const token = Option.isSome(file)
        ? Either.map(ObsNode.readToken(file.value), Option.some)
        : Either.right(envToken)
      if (Either.isLeft(token)) return yield* fail(`--token-file: ${token.left}`)
      const config = ObsNode.makeConfig(data, {
        port,
        host,
        retention: kept.right,
        token: token.right,
        tls: tls.right
      })
      return yield* Layer.launch(ObsNode.layer(config))
    })
).pipe(
  Command.withDescription(
    "Run an obs node: telemetry store, query API and live tail on one port (and over TLS on another)"
  )
)
