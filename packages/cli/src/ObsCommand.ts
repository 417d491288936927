/**
 * `iii obs`: runs one obs node (telemetry store, query API, live tail) until interrupted.
 *
 *   iii obs --data /var/lib/iii-obs --port 4320
 *   iii obs --data ./obs --port 4320 --host 127.0.0.1 --token-file /run/secrets/obs-token --retention 3d
 *
 * Logs the address it listens on. Without a token (`--token-file` or $III_OBS_TOKEN) it warns that
 * ingest, query and tail are open.
 */
import { Command, Options } from "@effect/cli"
import { Errors, ObsNode } from "@iii/obs"
import { Config, Effect, Either, Layer, Option } from "effect"

const data = Options.directory("data").pipe(
  Options.withDescription("directory of the LMDB store (created when missing)")
)
const port = Options.integer("port").pipe(
  Options.withDefault(ObsNode.defaults.port),
  Options.withDescription(
    `TCP port for HTTP and WebSocket (default ${ObsNode.defaults.port}; 0 = any free port)`
  )
)
const host = Options.text("host").pipe(
  Options.withDefault(ObsNode.defaults.host),
  Options.withDescription(`interface to bind (default ${ObsNode.defaults.host})`)
)
const tokenFile = Options.file("token-file").pipe(
  Options.optional,
  Options.withDescription("file holding the bearer token required for ingest, query and tail")
)
const retention = Options.text("retention").pipe(
  Options.withDefault("7d"),
  Options.withDescription("age after which data is deleted, e.g. 7d, 36h (default 7d)")
)

const fail = (reason: string) => Effect.fail(new Errors.ServerError({ reason }))

export const command = Command.make(
  "obs",
  { data, port, host, tokenFile, retention },
  ({ data, port, host, tokenFile, retention }) =>
    Effect.gen(function* () {
      if (port < 0 || port > 65535) return yield* fail(`--port: ${port} is not a port number`)
      const kept = ObsNode.parseRetention(retention)
      if (Either.isLeft(kept)) return yield* fail(`--retention: ${kept.left}`)
      const envToken = yield* Config.option(Config.redacted("III_OBS_TOKEN"))
      const token = Option.isSome(tokenFile)
        ? Either.map(ObsNode.readToken(tokenFile.value), Option.some)
        : Either.right(envToken)
      if (Either.isLeft(token)) return yield* fail(`--token-file: ${token.left}`)
      const config = ObsNode.makeConfig(data, {
        port,
        host,
        retention: kept.right,
        token: token.right
      })
      return yield* Layer.launch(ObsNode.layer(config))
    })
).pipe(Command.withDescription("Run an obs node: telemetry store, query API and live tail on one port"))
