/**
 * A standalone obs node for the obs benchmarks, in its own process (so clients and node do not share
 * an event loop): `node bench/obs-node.ts DATA_DIR`. Prints one JSON line `{ url, ... }` once it
 * listens, and runs until killed. Imports the built package (run `tsc -b packages/obs` first).
 */
import { ObsNode } from "@iii/obs"
import { Duration, Effect, Fiber, Layer, Logger, LogLevel } from "effect"

const dataDir = process.argv[2]
if (dataDir === undefined) throw new Error("usage: node bench/obs-node.ts DATA_DIR")
const config = ObsNode.makeConfig(dataDir, {
  port: 0,
  host: "127.0.0.1",
  nodeId: "bench",
  retention: Duration.days(36500),
  // For experiments: OBS_NODE_SPANS_PER_COMMIT, OBS_NODE_COMMITS_IN_FLIGHT.
  ...(process.env.OBS_NODE_SPANS_PER_COMMIT !== undefined && {
    maxSpansPerCommit: Number(process.env.OBS_NODE_SPANS_PER_COMMIT)
  }),
  ...(process.env.OBS_NODE_COMMITS_IN_FLIGHT !== undefined && {
    maxCommitsInFlight: Number(process.env.OBS_NODE_COMMITS_IN_FLIGHT)
  })
})

const fiber = Effect.gen(function* () {
  const info = yield* ObsNode.ObsNode
  process.stdout.write(`${JSON.stringify(info)}\n`)
  return yield* Effect.never
}).pipe(
  Effect.provide(ObsNode.layer(config).pipe(Layer.orDie)),
  Logger.withMinimumLogLevel(LogLevel.Error),
  Effect.runFork
)

// A clean shutdown on SIGINT (the writer thread exits too) lets `--cpu-prof` write its profiles;
// the benches SIGKILL otherwise.
process.on("SIGINT", () => {
  Effect.runPromise(Fiber.interrupt(fiber)).finally(() => process.exit(0))
})
