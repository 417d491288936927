/**
 * The agent's settings, read in one place: what a caller gives (`iii agent`'s flags, an embedding
 * app's code) and, for everything it leaves out, the environment a deployment sets — the controller's
 * sidecar (`III_*`, the Downward API's `POD_NAME`/`POD_NAMESPACE`) and the node agent's DaemonSet
 * (`NODE_NAME`). Every value is checked here; a bad one fails with an `AgentConfigError` naming the
 * flag (or variable) and what was expected.
 *
 * | setting | flag | environment |
 * | --- | --- | --- |
 * | obs URLs | `--obs` (repeat) | `III_OBS_URL` (comma-separated) |
 * | service | `--service` | `III_SERVICE` (node mode: default `iii-agent`) |
 * | composition, component | `--composition`, `--component` | `III_COMPOSITION`, `III_COMPONENT` |
 * | pod, namespace | `--pod`, `--namespace` | `III_POD_NAME` or `POD_NAME`, `III_NAMESPACE` or `POD_NAMESPACE` |
 * | captured log level | `--log-level` | `III_LOG_LEVEL` |
 * | nice value (eBPF) | `--nice` | `III_AGENT_NICE` (default 10) |
 * | trace propagation (eBPF) | `--propagation` | `III_PROPAGATION=true` |
 * | node mode | `--node` | `III_AGENT_NODE=true` |
 * | node name | `--node-name` | `III_NODE_NAME` or `NODE_NAME` |
 * | kubeconfig | `--kubeconfig` | `KUBECONFIG` (kubectl's lookup; in a cluster, the service account) |
 * | cgroup v2 root | `--cgroup-root` | `III_CGROUP_ROOT` (default: the cgroup2 mount) |
 * | pod logs | `--pod-logs` | `III_POD_LOGS` (default `/var/log/pods`) |
 * | log positions | `--state-dir` | `III_STATE_DIR` (default `/var/lib/iii-agent`) |
 *
 * @since 0.1.0
 */
import { readFileSync } from "node:fs"
import { hostname } from "node:os"
import type { Telemetry } from "@iii/core"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { AgentOptions } from "./Agent.js"
import { AgentConfigError } from "./Errors.js"
import type { ExporterOptions } from "./Exporter.js"
import * as Exporter from "./Exporter.js"
import { defaultNice } from "./Priority.js"
import { parseHostPort } from "./ProxyMode.js"

/** What a caller gives; everything is optional (the environment fills in, then defaults). @since 0.1.0 */
export interface Input {
  readonly obs?: ReadonlyArray<string> | undefined
  readonly service?: string | undefined
  readonly composition?: string | undefined
  readonly component?: string | undefined
  readonly pod?: string | undefined
  readonly namespace?: string | undefined
  readonly mode?: "auto" | "ebpf" | "proxy" | undefined
  /** A file holding obs's ingest token. */
  readonly tokenFile?: string | undefined
  /** Processes to trace (eBPF), as given on a command line. */
  readonly pids?: ReadonlyArray<string | number> | undefined
  readonly cgroups?: ReadonlyArray<string> | undefined
  readonly allPodProcesses?: boolean | undefined
  /** eBPF: the kernel inserts `traceparent` into outbound requests (see `AgentOptions.propagation`). */
  readonly propagation?: boolean | undefined
  readonly proxyListen?: string | undefined
  readonly proxyUpstream?: string | undefined
  readonly proxyEgress?: string | undefined
  readonly logLevel?: Telemetry.LogLevel | undefined
  readonly bufferBytes?: number | undefined
  readonly nice?: number | undefined
  /** A command to start and trace (`iii agent -- COMMAND ARGS`). */
  readonly command?: ReadonlyArray<string> | undefined
  /** Node mode: every traced pod of a Kubernetes node. */
  readonly node?: boolean | undefined
  readonly nodeName?: string | undefined
  readonly kubeconfig?: string | undefined
  readonly cgroupRoot?: string | undefined
  readonly podLogs?: string | undefined
  readonly stateDir?: string | undefined
  /** The version the agent announces to obs (`iii agent`: the cli package's). Default 0.1.0. */
  readonly version?: string | undefined
}

/** Everything needed to run the agent. @since 0.1.0 */
export interface AgentConfig {
  readonly agent: AgentOptions
  readonly exporter: ExporterOptions
  /** The nice value for the agent's threads in eBPF mode (0: left alone). */
  readonly nice: number
  readonly command: ReadonlyArray<string>
}

const fail = (message: string) => Effect.fail(new AgentConfigError({ message }))

/** A string from the environment (the first variable set), or undefined. */
const env = (...names: ReadonlyArray<string>) =>
  Effect.orDie(
    Effect.map(
      Config.option(
        names.map((name) => Config.string(name)).reduce((first, next) => Config.orElse(first, () => next))
      ),
      Option.getOrUndefined
    )
  )

const logLevels = ["trace", "debug", "info", "warn", "error", "fatal"] as const

const hostPort = (flag: string, value: string | undefined) =>
  value === undefined
    ? Effect.succeed(undefined)
    : Effect.fromNullable(parseHostPort(value)).pipe(
        Effect.orElse(() => fail(`--${flag}: expected HOST:PORT, got "${value}"`))
      )

const integer = (flag: string, value: number | string | undefined, fallback: number) => {
  const n = value === undefined ? fallback : Number(value)
  return Number.isInteger(n) ? Effect.succeed(n) : fail(`--${flag}: expected an integer, got "${value}"`)
}

/**
 * Resolves the agent's settings: `input` first, then the environment, then defaults; fails with
 * the first problem found.
 *
 * @since 0.1.0
 */
export const resolve = (input: Input): Effect.Effect<AgentConfig, AgentConfigError> =>
  Effect.gen(function* () {
    const obsUrls =
      (input.obs ?? []).length > 0
        ? [...(input.obs ?? [])]
        : ((yield* env("III_OBS_URL")) ?? "")
            .split(",")
            .flatMap((url) => (url.trim() === "" ? [] : [url.trim()]))
    if (obsUrls.length === 0) return yield* fail("--obs URL is required (e.g. ws://127.0.0.1:7070)")
    for (const url of obsUrls) {
      if (!URL.canParse(url) || !/^(wss?|https?):$/.test(new URL(url).protocol))
        return yield* fail(`--obs: not a ws:// or http:// URL: "${url}"`)
    }
    const node = input.node === true || (yield* env("III_AGENT_NODE")) === "true"
    const propagationEnv = yield* env("III_PROPAGATION")
    if (propagationEnv !== undefined && propagationEnv !== "true" && propagationEnv !== "false")
      return yield* fail(`$III_PROPAGATION: expected true or false, got "${propagationEnv}"`)
    const propagation = input.propagation ?? propagationEnv === "true"
    const service = input.service ?? (yield* env("III_SERVICE")) ?? (node ? "iii-agent" : undefined)
    if (service === undefined) return yield* fail("--service NAME is required (or $III_SERVICE)")
    const listen = yield* hostPort("proxy-listen", input.proxyListen)
    const upstream = yield* hostPort("proxy-upstream", input.proxyUpstream)
    const egressFlag = yield* hostPort("proxy-egress", input.proxyEgress)
    if ((listen === undefined) !== (upstream === undefined))
      return yield* fail("proxy mode needs both --proxy-listen and --proxy-upstream")
    const nice = yield* integer("nice", input.nice ?? (yield* env("III_AGENT_NICE")), defaultNice)
    if (nice < 0 || nice > 19) return yield* fail(`--nice: expected 0 to 19, got ${nice}`)
    const bufferBytes = yield* integer("buffer-bytes", input.bufferBytes, 64 * 1024 * 1024)
    if (bufferBytes <= 0) return yield* fail(`--buffer-bytes: expected a positive size, got ${bufferBytes}`)
    const pids: Array<number> = []
    for (const pid of input.pids ?? []) {
      if (!/^[1-9]\d{0,9}$/.test(String(pid))) return yield* fail(`--pid: not a process id: "${pid}"`)
      pids.push(Number(pid))
    }
    const logLevel = input.logLevel ?? (yield* env("III_LOG_LEVEL")) ?? "info"
    if (!(logLevels as ReadonlyArray<string>).includes(logLevel))
      return yield* fail(`--log-level: expected one of ${logLevels.join(", ")}, got "${logLevel}"`)
    const command = input.command ?? []
    const cgroups = input.cgroups ?? []
    const nodeName = node ? (input.nodeName ?? (yield* env("III_NODE_NAME", "NODE_NAME"))) : undefined
    if (node && nodeName === undefined)
      return yield* fail(
        "node mode needs the node's name: --node-name NAME or $NODE_NAME (the Downward API's spec.nodeName)"
      )
    if (
      node &&
      (command.length > 0 || pids.length > 0 || listen !== undefined || input.allPodProcesses === true)
    )
      return yield* fail(
        "--node traces the node's pods: it takes no --pid, --all-pod-processes, proxy or command"
      )
    if (
      !node &&
      command.length === 0 &&
      input.allPodProcesses !== true &&
      pids.length === 0 &&
      cgroups.length === 0 &&
      listen === undefined
    )
      return yield* fail(
        "nothing to trace: give --pid, --cgroup, --all-pod-processes, --node, -- COMMAND, or --proxy-listen/--proxy-upstream"
      )
    const token =
      input.tokenFile === undefined
        ? undefined
        : yield* Effect.try({
            try: () => readFileSync(input.tokenFile ?? "", "utf8").trim(),
            catch: (error) =>
              new AgentConfigError({ message: `--token-file ${input.tokenFile}: ${String(error)}` })
          })
    const namespace = input.namespace ?? (yield* env("III_NAMESPACE", "POD_NAMESPACE"))
    const composition = input.composition ?? (yield* env("III_COMPOSITION"))
    const component = input.component ?? (yield* env("III_COMPONENT"))
    const pod = input.pod ?? (yield* env("III_POD_NAME", "POD_NAME")) ?? hostname()
    const identity = {
      service,
      pod,
      ...(namespace === undefined ? {} : { namespace }),
      ...(composition === undefined ? {} : { composition }),
      ...(component === undefined ? {} : { component }),
      ...(nodeName === undefined ? {} : { node: nodeName })
    }
    const egress = egressFlag ?? (command.length > 0 ? { host: "127.0.0.1", port: 0 } : undefined)
    return {
      agent: {
        identity,
        mode: input.mode ?? "auto",
        pids,
        allPodProcesses: input.allPodProcesses === true,
        cgroups,
        ...(propagation ? { propagation: true } : {}),
        ...(command.length > 0 ? { startsCommand: true } : {}),
        proxy: listen === undefined || upstream === undefined ? undefined : { listen, upstream, egress },
        logLevel: logLevel as Telemetry.LogLevel,
        // A command's output goes through socketpairs the socket hooks see: no syscall tracepoints
        // (their slow path would cost every syscall on the host).
        ...(command.length > 0 ? { capture: { stdio: "sockets" as const } } : {}),
        ...(nodeName === undefined
          ? {}
          : {
              node: {
                nodeName,
                kubeconfig: input.kubeconfig,
                cgroupRoot: input.cgroupRoot ?? (yield* env("III_CGROUP_ROOT")),
                podLogs: input.podLogs ?? (yield* env("III_POD_LOGS")),
                stateDir: input.stateDir ?? (yield* env("III_STATE_DIR")) ?? "/var/lib/iii-agent"
              }
            })
      },
      exporter: {
        urls: obsUrls,
        agent: {
          id: Exporter.newAgentId(),
          service,
          pod,
          node: nodeName ?? hostname(),
          ...(namespace === undefined ? {} : { namespace }),
          version: input.version ?? "0.1.0"
        },
        token,
        maxBufferBytes: bufferBytes
      },
      nice,
      command
    } satisfies AgentConfig
  })
