/**
 * `iii agent`: traces HTTP traffic of processes (eBPF) or through a proxy, and streams spans, metrics
 * and logs to obs.
 *
 *   iii agent --obs ws://127.0.0.1:7070 --service shop -- node server.js
 *   iii agent --obs ws://127.0.0.1:7070 --service shop --pid 1234
 *   iii agent --obs ws://127.0.0.1:7070 --service shop --mode proxy \
 *     --proxy-listen 0.0.0.0:8080 --proxy-upstream 127.0.0.1:3000
 *
 * With `-- COMMAND ARGS` the agent starts the command (see `TracedCommand`: traced before it runs,
 * signals passed through, the agent exits with its exit status).
 */
import { readFileSync } from "node:fs"
import { hostname } from "node:os"
import { Args, Command, Options } from "@effect/cli"
import { Agent, Errors, Exporter, Priority, ProxyMode, TracedCommand } from "@iii/agent"
import { Config, Effect, Layer, Option } from "effect"
import { version } from "./internal/Version.js"

// Every identity and destination flag falls back to the environment the controller gives its sidecar
// (III_*; see packages/controller/src/Render.ts), so the injected container needs no arguments.
const obs = Options.text("obs").pipe(
  Options.repeated,
  Options.withDescription(
    "obs base URL, e.g. ws://127.0.0.1:7070 (repeat to send to several; default $III_OBS_URL, comma-separated)"
  )
)
const service = Options.text("service").pipe(
  Options.withFallbackConfig(Config.string("III_SERVICE")),
  Options.withDescription("service.name of the traced app (default $III_SERVICE)")
)
const composition = Options.text("composition").pipe(
  Options.withFallbackConfig(Config.string("III_COMPOSITION")),
  Options.optional,
  Options.withDescription("ServiceComposition the app belongs to (default $III_COMPOSITION)")
)
const component = Options.text("component").pipe(
  Options.withFallbackConfig(Config.string("III_COMPONENT")),
  Options.optional,
  Options.withDescription("its component in the composition (default $III_COMPONENT)")
)
/** `--mode`, shared with `iii up`, which runs agents too. */
export const mode = Options.choice("mode", ["auto", "ebpf", "proxy"]).pipe(
  Options.withDefault("auto" as const),
  Options.withDescription("agent capture mode; auto = eBPF when available, proxy otherwise")
)
const tokenFile = Options.file("token-file").pipe(
  Options.optional,
  Options.withDescription("file holding the obs ingest token")
)
// Text, not Options.integer: @effect/cli 0.77 rejects every value of a repeated integer option.
const pids = Options.text("pid").pipe(Options.repeated, Options.withDescription("process to trace (eBPF)"))
const allPodProcesses = Options.boolean("all-pod-processes").pipe(
  Options.withDescription(
    "trace every process of the agent's pid namespace but its own (the sidecar, with shareProcessNamespace: true)"
  )
)
const cgroups = Options.text("cgroup").pipe(
  Options.repeated,
  Options.withDescription("cgroup v2 directory whose processes are traced (eBPF)")
)
const proxyListen = Options.text("proxy-listen").pipe(
  Options.optional,
  Options.withDescription("proxy mode: HOST:PORT clients connect to")
)
const proxyUpstream = Options.text("proxy-upstream").pipe(
  Options.optional,
  Options.withDescription("proxy mode: HOST:PORT of the app")
)
const proxyEgress = Options.text("proxy-egress").pipe(
  Options.optional,
  Options.withDescription(
    "proxy mode: HOST:PORT of the forward proxy for outbound calls (default 127.0.0.1:0 with a command)"
  )
)
const logLevel = Options.choice("log-level", ["trace", "debug", "info", "warn", "error", "fatal"]).pipe(
  Options.withFallbackConfig(
    Config.literal("trace", "debug", "info", "warn", "error", "fatal")("III_LOG_LEVEL")
  ),
  Options.withDefault("info" as const),
  Options.withDescription("minimum level of captured log lines")
)
const pod = Options.text("pod").pipe(
  Options.withFallbackConfig(
    Config.string("III_POD_NAME").pipe(Config.orElse(() => Config.string("POD_NAME")))
  ),
  Options.optional,
  Options.withDescription("pod name (default $III_POD_NAME, $POD_NAME or the host name)")
)
const namespace = Options.text("namespace").pipe(
  Options.withFallbackConfig(
    Config.string("III_NAMESPACE").pipe(Config.orElse(() => Config.string("POD_NAMESPACE")))
  ),
  Options.optional,
  Options.withDescription("namespace (default $III_NAMESPACE or $POD_NAMESPACE)")
)
const bufferBytes = Options.integer("buffer-bytes").pipe(
  Options.withDefault(64 * 1024 * 1024),
  Options.withDescription("unacknowledged telemetry kept per obs URL before the oldest is dropped")
)
const nice = Options.integer("nice").pipe(
  Options.withFallbackConfig(Config.integer("III_AGENT_NICE")),
  Options.withDefault(Priority.defaultNice),
  Options.withDescription(
    "nice value of the agent's threads (0-19; 0 leaves the priority alone): on a busy core the traced apps run first (default $III_AGENT_NICE or 10)"
  )
)
const commandLine = Args.text({ name: "command" }).pipe(
  Args.repeated,
  Args.withDescription("-- COMMAND ARGS to start and trace")
)

const hostPort = (flag: string, value: Option.Option<string>) =>
  Option.match(value, {
    onNone: () => Effect.succeed(undefined),
    onSome: (text) => {
      const parsed = ProxyMode.parseHostPort(text)
      return parsed === undefined
        ? Effect.fail(
            new Errors.AgentConfigError({ message: `--${flag}: expected HOST:PORT, got "${text}"` })
          )
        : Effect.succeed(parsed)
    }
  })

export const command = Command.make(
  "agent",
  {
    obs,
    service,
    composition,
    component,
    mode,
    tokenFile,
    pids,
    allPodProcesses,
    cgroups,
    proxyListen,
    proxyUpstream,
    proxyEgress,
    logLevel,
    pod,
    namespace,
    bufferBytes,
    nice,
    commandLine
  },
  (config) =>
    Effect.gen(function* () {
      const obsUrls =
        config.obs.length > 0
          ? config.obs
          : (process.env.III_OBS_URL ?? "")
              .split(",")
              .flatMap((url) => (url.trim() === "" ? [] : [url.trim()]))
      if (obsUrls.length === 0) {
        return yield* new Errors.AgentConfigError({
          message: "--obs URL is required (e.g. ws://127.0.0.1:7070)"
        })
      }
      for (const url of obsUrls) {
        if (!URL.canParse(url) || !/^(wss?|https?):$/.test(new URL(url).protocol)) {
          return yield* new Errors.AgentConfigError({
            message: `--obs: not a ws:// or http:// URL: "${url}"`
          })
        }
      }
      const listen = yield* hostPort("proxy-listen", config.proxyListen)
      const upstream = yield* hostPort("proxy-upstream", config.proxyUpstream)
      const egressFlag = yield* hostPort("proxy-egress", config.proxyEgress)
      if ((listen === undefined) !== (upstream === undefined)) {
        return yield* new Errors.AgentConfigError({
          message: "proxy mode needs both --proxy-listen and --proxy-upstream"
        })
      }
      if (!Number.isInteger(config.nice) || config.nice < 0 || config.nice > 19) {
        return yield* new Errors.AgentConfigError({ message: `--nice: expected 0 to 19, got ${config.nice}` })
      }
      const pidNumbers: Array<number> = []
      for (const pid of config.pids) {
        if (!/^[1-9]\d{0,9}$/.test(pid)) {
          return yield* new Errors.AgentConfigError({ message: `--pid: not a process id: "${pid}"` })
        }
        pidNumbers.push(Number(pid))
      }
      const hasCommand = config.commandLine.length > 0
      if (
        !hasCommand &&
        !config.allPodProcesses &&
        config.pids.length === 0 &&
        config.cgroups.length === 0 &&
        listen === undefined
      ) {
        return yield* new Errors.AgentConfigError({
          message:
            "nothing to trace: give --pid, --cgroup, --all-pod-processes, -- COMMAND, or --proxy-listen/--proxy-upstream"
        })
      }
      const token = yield* Option.match(config.tokenFile, {
        onNone: () => Effect.succeed(undefined),
        onSome: (file) =>
          Effect.try({
            try: () => readFileSync(file, "utf8").trim(),
            catch: (error) =>
              new Errors.AgentConfigError({ message: `--token-file ${file}: ${String(error)}` })
          })
      })
      const namespaceName = Option.getOrUndefined(config.namespace)
      const compositionName = Option.getOrUndefined(config.composition)
      const componentName = Option.getOrUndefined(config.component)
      const identity = {
        service: config.service,
        pod: Option.getOrElse(config.pod, () => hostname()),
        ...(namespaceName === undefined ? {} : { namespace: namespaceName }),
        ...(compositionName === undefined ? {} : { composition: compositionName }),
        ...(componentName === undefined ? {} : { component: componentName })
      }
      const egress = egressFlag ?? (hasCommand ? { host: "127.0.0.1", port: 0 } : undefined)
      const agentLayer = Agent.layer({
        identity,
        mode: config.mode,
        pids: pidNumbers,
        allPodProcesses: config.allPodProcesses,
        cgroups: config.cgroups,
        proxy: listen === undefined || upstream === undefined ? undefined : { listen, upstream, egress },
        logLevel: config.logLevel
      }).pipe(
        Layer.provide(
          Exporter.layer({
            urls: obsUrls,
            agent: { id: Exporter.newAgentId(), ...identity, node: hostname(), version },
            token,
            maxBufferBytes: config.bufferBytes
          })
        )
      )
      const exitCode = yield* Effect.gen(function* () {
        const agent = yield* Agent.Agent
        // Only beside the app: in proxy mode the agent is in the requests' path, where a lower
        // priority would add to their latency.
        if (agent.mode === "ebpf" && config.nice > 0) {
          const lowered = yield* Priority.lower(config.nice)
          if (lowered.failures.length > 0)
            yield* Effect.logWarning(`--nice ${config.nice}: ${lowered.failures.join("; ")}`)
        }
        return yield* hasCommand
          ? TracedCommand.run(config.commandLine, { forwardSignals: true })
          : Effect.never
      }).pipe(Effect.provide(agentLayer))
      process.exitCode = exitCode
    })
).pipe(
  Command.withDescription("Trace HTTP traffic (eBPF or proxy) and stream spans, metrics and logs to obs")
)
