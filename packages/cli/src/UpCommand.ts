/**
 * `iii up [FILE]`: iii on one machine, no cluster. An obs node (its store under the user's cache, so
 * a second run shows the first one's traces), an agent per component (eBPF when this machine allows
 * it, proxy otherwise; it says which), and the components of FILE that declare a local `command`,
 * or, without FILE, a built-in demo: three services calling each other, with some errors, slow
 * routes and a gentle load. It prints the dashboard's address and stays quiet: the apps' output goes
 * to log files and to the dashboard, iii's own log to a file. Ctrl-C stops everything.
 */
import { closeSync, openSync, readFileSync, writeSync } from "node:fs"
import { connect, createServer } from "node:net"
import { hostname } from "node:os"
import { delimiter, dirname, join, resolve } from "node:path"
import { Args, Command, Options } from "@effect/cli"
import { Agent, EbpfCapture, Exporter, TracedCommand } from "@iii/agent"
import { Quantity, ServiceComposition } from "@iii/core"
import { ObsNode } from "@iii/obs"
import {
  Config,
  Console,
  Context,
  Data,
  Duration,
  Effect,
  Either,
  FiberRef,
  HashSet,
  Layer,
  Logger,
  Option,
  Redacted,
  Schedule
} from "effect"
import { mode } from "./AgentCommand.js"
import * as Demo from "./internal/Demo.js"
import * as LocalRun from "./internal/LocalRun.js"
import * as UpHome from "./internal/UpHome.js"
import { version } from "./internal/Version.js"

export class UpError extends Data.TaggedError("UpError")<{ readonly message: string }> {}

const host = "127.0.0.1"

const file = Args.file({ name: "FILE", exists: "yes" }).pipe(
  Args.optional,
  Args.withDescription(
    "a ServiceComposition whose components declare a local `command`; without it, the built-in demo"
  )
)
const port = Options.integer("port").pipe(
  Options.withFallbackConfig(Config.integer("III_UP_PORT")),
  Options.withDefault(UpHome.defaultPort),
  Options.withDescription(
    `port of the obs node and dashboard on ${host}, 0 picks a free one (default $III_UP_PORT or ${UpHome.defaultPort})`
  )
)
const data = Options.text("data").pipe(
  Options.withFallbackConfig(Config.string("III_UP_DATA")),
  Options.optional,
  Options.withDescription(
    `where the store, logs and token live (default $III_UP_DATA or ${UpHome.defaultHome()})`
  )
)
const duration = Options.text("duration").pipe(
  Options.optional,
  Options.withDescription("stop after this long (e.g. 30s); default: run until Ctrl-C")
)

export interface UpOptions {
  /** A composition file; none runs the demo. */
  readonly file: Option.Option<string>
  readonly home: string
  readonly port: number
  readonly mode: "auto" | "ebpf" | "proxy"
  readonly duration: Option.Option<Duration.Duration>
}

const freePort = Effect.async<number>((resume) => {
  const server = createServer().listen(0, host, () => {
    const address = server.address()
    server.close(() => resume(Effect.succeed(typeof address === "object" && address ? address.port : 0)))
  })
})

const accepts = (port: number) =>
  Effect.async<void, Error>((resume) => {
    const socket = connect(port, host)
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.void)
    })
    socket.once("error", (error) => resume(Effect.fail(error)))
  })

/** Whether the port accepted a connection within the time (an app takes a moment to listen). */
const listening = (port: number, within: Duration.DurationInput) =>
  accepts(port).pipe(
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo(within))),
    Effect.as(true),
    Effect.orElseSucceed(() => false)
  )

const loadComposition = (path: string) =>
  Effect.gen(function* () {
    const text = yield* Effect.try({
      try: () => readFileSync(path, "utf8"),
      catch: (e) => new UpError({ message: `cannot read ${path}: ${(e as Error).message}` })
    })
    const documents = ServiceComposition.fromYaml(text, path)
    const [first, ...others] = documents
    if (first === undefined) return yield* new UpError({ message: `${path} holds no composition` })
    if (others.length > 0)
      return yield* new UpError({
        message: `${path} holds ${documents.length} compositions; iii up runs one file per composition`
      })
    return yield* Either.match(first, {
      onLeft: (invalid) =>
        new UpError({
          message: [
            `${path} is not a valid composition:`,
            ...invalid.issues.map((i) => `  ${i.path}: ${i.message}`)
          ].join("\n")
        }),
      onRight: Effect.succeed
    })
  })

/** eBPF when asked or possible, proxy otherwise, and the reason in words. */
const chooseMode = (requested: UpOptions["mode"]) =>
  Effect.gen(function* () {
    if (requested === "proxy") return { mode: "proxy" as const, why: "proxy mode asked for (--mode proxy)" }
    const ebpf = yield* EbpfCapture.isAvailable
    if (ebpf.available) return { mode: "ebpf" as const, why: "traced in the kernel, no change to the apps" }
    const reasons = ebpf.reasons.join("; ")
    if (requested === "ebpf") return yield* new UpError({ message: `eBPF is not available here: ${reasons}` })
    return {
      mode: "proxy" as const,
      why: `eBPF is not available (${reasons}); each service sits behind an agent proxy`
    }
  })

/** iii's own log (agents, obs) goes to a file, in logfmt: the terminal is the user's. */
const toFile = (fd: number) => Logger.map(Logger.logfmtLogger, (line) => writeSync(fd, `${line}\n`))

export const up = (options: UpOptions) =>
  Effect.gen(function* () {
    const home = resolve(options.home)
    yield* Effect.try({
      try: () => UpHome.prepare(home),
      catch: (e) => new UpError({ message: `cannot use ${home}: ${(e as Error).message}` })
    })
    yield* Effect.acquireUseRelease(
      Effect.sync(() => openSync(join(UpHome.paths(home).logs, "iii.log"), "a")),
      (fd) =>
        run(options, home).pipe(
          Effect.scoped,
          Effect.locally(FiberRef.currentLoggers, HashSet.make(toFile(fd))),
          Effect.onInterrupt(() => Console.log("iii up: stopped"))
        ),
      (fd) => Effect.sync(() => closeSync(fd))
    )
  })

const run = (options: UpOptions, home: string) =>
  Effect.gen(function* () {
    const composition = yield* Option.match(options.file, {
      onNone: () => Effect.succeed(Demo.composition()),
      onSome: loadComposition
    })
    const workDir = Option.match(options.file, {
      onNone: () => process.cwd(),
      onSome: (f) => dirname(resolve(f))
    })
    const name = composition.metadata.name
    const runnable = LocalRun.runnable(composition)
    const skipped = composition.spec.components.filter((c) => c.command === undefined).map((c) => c.name)
    if (runnable.length === 0)
      return yield* new UpError({
        message: `no component of ${name} declares a local \`command\`, so there is nothing to run here (see iii up --help)`
      })

    const paths = UpHome.paths(home)
    const token = UpHome.token(home)
    const chosen = yield* chooseMode(options.mode)

    const obsContext = yield* Layer.build(
      ObsNode.layer(
        ObsNode.makeConfig(paths.obs, { port: options.port, host, token: Option.some(Redacted.make(token)) })
      )
    ).pipe(
      Effect.catchTag("ServerError", (e) => {
        const running = UpHome.readRunning(home)
        return new UpError({
          message:
            running === undefined
              ? e.message
              : `another iii up (pid ${running.pid}) is running on this data at ${running.url}; stop it first`
        })
      })
    )
    const obs = Context.get(obsContext, ObsNode.ObsNode)
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        UpHome.writeRunning(home, { url: obs.url, tokenFile: paths.token, pid: process.pid })
      ),
      () => Effect.sync(() => UpHome.removeRunning(home))
    )

    const ports = new Map<string, LocalRun.Ports>()
    for (const c of runnable) {
      const declared = LocalRun.declaredPort(c)
      const app = chosen.mode === "ebpf" ? (declared ?? (yield* freePort)) : yield* freePort
      ports.set(c.name, { app, service: chosen.mode === "ebpf" ? app : (declared ?? (yield* freePort)) })
    }
    const components = LocalRun.plan(composition, ports)

    let stopping = false
    const started = yield* Effect.forEach(components, (c) =>
      Effect.gen(function* () {
        const identity = { service: c.name, component: c.name, composition: name, pod: hostname() }
        const agentContext = yield* Layer.build(
          Agent.layer({
            identity,
            mode: chosen.mode,
            proxy: {
              listen: { host, port: c.ports.service },
              upstream: { host, port: c.ports.app },
              egress: { host, port: 0 }
            },
            metricsIntervalMs: 2_000
          }).pipe(
            Layer.provide(
              Exporter.layer({
                urls: [obs.url],
                token,
                agent: { id: Exporter.newAgentId(), ...identity, node: hostname(), version },
                flushIntervalMs: 250
              })
            )
          )
        )
        const log = join(paths.logs, `${c.name}.log`)
        const output = yield* Effect.acquireRelease(
          Effect.sync(() => openSync(log, "a")),
          (fd) => Effect.sync(() => closeSync(fd))
        )
        const running = yield* TracedCommand.start(c.argv, {
          // Components run with the Node that runs iii first on PATH.
          env: {
            ...process.env,
            PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ""}`,
            ...c.env
          },
          cwd: workDir,
          output,
          echoOutput: false
        }).pipe(
          Effect.provide(agentContext),
          Effect.mapError((e) => new UpError({ message: `${c.name}: ${e.message}` }))
        )
        yield* running.exitCode.pipe(
          Effect.flatMap((code) =>
            stopping ? Effect.void : Console.error(`${c.name} exited with status ${code}; its output: ${log}`)
          ),
          Effect.forkScoped
        )
        return { ...c, log }
      })
    )
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        stopping = true
      })
    )

    const ready = yield* Effect.forEach(started, (c) => listening(c.ports.app, "30 seconds"), {
      concurrency: "unbounded"
    })
    const width = Math.max(...started.map((c) => c.name.length), 8)
    const lines = [
      "",
      `iii up: ${Option.isNone(options.file) ? "the demo, " : ""}composition ${name}, ${started.length} service${started.length === 1 ? "" : "s"}`,
      `  ${"agent".padEnd(width)}  ${chosen.mode} mode: ${chosen.why}`,
      ...started.map(
        (c, i) =>
          `  ${c.name.padEnd(width)}  ${host}:${c.ports.service}  ${ready[i] ? "" : "(not listening yet) "}output in ${c.log}`
      ),
      ...skipped.map((s) => `  ${s.padEnd(width)}  skipped: no local command (it runs in a cluster only)`),
      `  ${"obs".padEnd(width)}  ${obs.url}  store in ${paths.obs}`,
      ...(Option.isNone(options.file) ? [`  ${"load".padEnd(width)}  3 requests/s to ${Demo.entry}`] : []),
      "",
      `Dashboard: ${obs.url}/#token=${token}`,
      "Terminal:  iii services · iii top · iii tail · iii trace ID · iii correlate ID",
      `Ctrl-C stops everything; the data stays in ${home}.`
    ]
    yield* Console.log(lines.join("\n"))
    const entry = started.find((c) => c.name === Demo.entry)
    if (Option.isNone(options.file) && entry !== undefined)
      yield* Effect.forkScoped(Demo.load(`http://${host}:${entry.ports.service}`))
    yield* Option.match(options.duration, { onNone: () => Effect.never, onSome: Effect.sleep })
  })

const parseDuration = (text: string) =>
  Either.flatMap(Quantity.parse(text), (q) =>
    q.kind === "duration"
      ? Either.right(Duration.millis(q.milliseconds))
      : Either.left(`"${text}" is not a duration`)
  )

/** `iii up`, or the same under another name (`iii demo`). */
export const make = (commandName: string, description: string) =>
  Command.make(commandName, { file, port, data, mode, duration }, (flags) =>
    Effect.gen(function* () {
      const limit = yield* Option.match(flags.duration, {
        onNone: () => Effect.succeedNone,
        onSome: (text) =>
          Either.match(parseDuration(text), {
            onLeft: (reason) => Effect.fail(new UpError({ message: `--duration: ${reason}` })),
            onRight: Effect.succeedSome
          })
      })
      yield* up({
        file: flags.file,
        home: Option.getOrElse(flags.data, () => UpHome.defaultHome()),
        port: flags.port,
        mode: flags.mode,
        duration: limit
      })
    })
  ).pipe(Command.withDescription(description))

export const command = make(
  "up",
  "Run iii on this machine: obs, the dashboard, an agent, and FILE's components with a local command (or a demo)"
)
