/**
 * `iii demo`: the whole data path on one machine, with nothing to configure. An obs node (LMDB in a
 * temporary directory), a small two-tier "shop" service started under the agent (eBPF when this
 * machine allows it, the proxy otherwise), steady traffic with some failures and correlation ids, and
 * a printout of where to look. Ctrl-C stops everything and removes the data.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { hostname, tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Command, Options } from "@effect/cli"
import { Agent, Exporter, TracedCommand } from "@iii/agent"
import { Quantity } from "@iii/core"
import { ObsNode } from "@iii/obs"
import { Console, Context, Data, Duration, Effect, Either, Layer, Option, Schedule } from "effect"
import { mode } from "./AgentCommand.js"
import { version } from "./internal/Version.js"

export class DemoError extends Data.TaggedError("DemoError")<{ readonly message: string }> {}

const host = "127.0.0.1"

const port = Options.integer("port").pipe(
  Options.withDefault(7070),
  Options.withDescription("obs node port on 127.0.0.1 (0 picks a free one)")
)
const duration = Options.text("duration").pipe(
  Options.optional,
  Options.withDescription("stop after this long (e.g. 30s); default: run until Ctrl-C")
)

// The shop runs as its own process so the agent traces it as it would any app. Built, it is a .js
// beside this module; from sources (tests), Node runs the .ts directly.
const shopScript = () => {
  const built = fileURLToPath(new URL("./internal/DemoShop.js", import.meta.url))
  return existsSync(built) ? built : built.replace(/\.js$/, ".ts")
}

const freePort = Effect.async<number>((resume) => {
  const server = createServer().listen(0, host, () => {
    const address = server.address()
    server.close(() => resume(Effect.succeed(typeof address === "object" && address ? address.port : 0)))
  })
})

const waitForHttp = (url: string) =>
  Effect.tryPromise(() => fetch(url)).pipe(
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("15 seconds"))),
    Effect.orDie
  )

/** Two requests a second: orders, some failing, some unknown routes; every fifth with a correlation id. */
const traffic = (appUrl: string) => {
  let n = 0
  const one = Effect.suspend(() => {
    n++
    const path = n % 7 === 0 ? `/orders/${n}?fail` : n % 11 === 0 ? "/basket" : `/orders/${n}`
    const headers: Record<string, string> = n % 5 === 0 ? { "x-iii-correlation-id": `demo-order-${n}` } : {}
    return Effect.tryPromise(() => fetch(`${appUrl}${path}`, { headers }).then((res) => res.arrayBuffer()))
  }).pipe(Effect.ignore)
  return one.pipe(Effect.repeat(Schedule.spaced("500 millis")))
}

const instructions = (obsUrl: string, appUrl: string, agentMode: string, dataDir: string) =>
  [
    "",
    "iii demo is running",
    `  obs node      ${obsUrl}   (LMDB in ${dataDir})`,
    `  agent         ${agentMode} mode, tracing service "shop" (front end + inventory back end)`,
    `  the app       ${appUrl}   (2 requests/s: orders, some failing, every fifth with a correlation id)`,
    "",
    "Where to look (spans appear within a second or two):",
    `  curl -s ${obsUrl}/v1/services`,
    `  curl -s '${obsUrl}/v1/traces?service=shop&limit=5'`,
    `  curl -s '${obsUrl}/v1/traces?service=shop&status=5xx'`,
    `  curl -s ${obsUrl}/v1/correlate/demo-order-5          # trace, logs and RED of one request`,
    `  curl -s '${obsUrl}/v1/services/shop/red?window=5m&step=10s'`,
    `  curl -s ${obsUrl}/metrics`,
    `  live tail: ${obsUrl.replace(/^http/, "ws")}/v1/tail?service=shop`,
    "",
    "Ctrl-C stops everything and removes the data."
  ].join("\n")

export interface DemoOptions {
  readonly port: number
  readonly mode: "auto" | "ebpf" | "proxy"
  readonly duration: Option.Option<Duration.Duration>
}

export const demo = (options: DemoOptions) =>
  Effect.scoped(
    Effect.gen(function* () {
      const dataDir = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "iii-demo-"))),
        (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
      )
      const obsContext = yield* Layer.build(
        ObsNode.layer(ObsNode.makeConfig(dataDir, { port: options.port, host }))
      )
      const obs = Context.get(obsContext, ObsNode.ObsNode)

      const frontPort = yield* freePort
      const backPort = yield* freePort
      const proxyPort = yield* freePort
      const identity = { service: "shop", pod: hostname() }
      const agentContext = yield* Layer.build(
        Agent.layer({
          identity,
          mode: options.mode,
          proxy: {
            listen: { host, port: proxyPort },
            upstream: { host, port: frontPort },
            egress: { host, port: 0 }
          },
          metricsIntervalMs: 2_000
        }).pipe(
          Layer.provide(
            Exporter.layer({
              urls: [obs.url],
              agent: { id: Exporter.newAgentId(), ...identity, node: hostname(), version },
              flushIntervalMs: 250
            })
          )
        )
      )
      const agent = Context.get(agentContext, Agent.Agent)
      yield* TracedCommand.start([process.execPath, shopScript(), String(frontPort), String(backPort)], {
        echoOutput: false
      }).pipe(Effect.provide(agentContext))
      const appUrl = agent.mode === "ebpf" ? `http://${host}:${frontPort}` : `http://${host}:${proxyPort}`
      yield* waitForHttp(`${appUrl}/health`)
      yield* Console.log(instructions(obs.url, appUrl, agent.mode, dataDir))
      yield* Effect.forkScoped(traffic(appUrl))
      yield* Option.match(options.duration, { onNone: () => Effect.never, onSome: Effect.sleep })
    })
  )

const parseDuration = (text: string) =>
  Either.flatMap(Quantity.parse(text), (q) =>
    q.kind === "duration"
      ? Either.right(Duration.millis(q.milliseconds))
      : Either.left(`"${text}" is not a duration`)
  )

export const command = Command.make("demo", { port, mode, duration }, (flags) =>
  Effect.gen(function* () {
    const limit = yield* Option.match(flags.duration, {
      onNone: () => Effect.succeedNone,
      onSome: (text) =>
        Either.match(parseDuration(text), {
          onLeft: (reason) => Effect.fail(new DemoError({ message: `--duration: ${reason}` })),
          onRight: Effect.succeedSome
        })
    })
    yield* demo({ port: flags.port, mode: flags.mode, duration: limit })
  })
).pipe(
  Command.withDescription("Run an obs node and an agent tracing a small demo service; prints where to look")
)
