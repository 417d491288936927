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
import { Args, Command, Options } from "@effect/cli"
import { Agent, AgentConfig, Exporter, Priority, TracedCommand } from "@iii/agent"
import { Effect, Layer, Option } from "effect"
import { version } from "./internal/Version.js"

// Flags only: what a flag leaves out, AgentConfig takes from the environment the controller's
// sidecar and the node agent's DaemonSet set (III_*, POD_NAME, NODE_NAME…), then its defaults.
const text = (name: string, description: string) =>
  Options.text(name).pipe(Options.optional, Options.withDescription(description))
const obs = Options.text("obs").pipe(
  Options.repeated,
  Options.withDescription(
    "obs base URL, e.g. ws://127.0.0.1:7070 (repeat to send to several; default $III_OBS_URL, comma-separated)"
  )
)
const service = text("service", "service.name of the traced app (default $III_SERVICE; node mode: iii-agent)")
const composition = text("composition", "ServiceComposition the app belongs to (default $III_COMPOSITION)")
const component = text("component", "its component in the composition (default $III_COMPONENT)")
/** `--mode`, shared with `iii up`, which runs agents too. */
export const mode = Options.choice("mode", ["auto", "ebpf", "proxy"]).pipe(
  Options.withDefault("auto" as const),
  Options.withDescription("agent capture mode; auto = eBPF when available, proxy otherwise")
)
const tokenFile = text("token-file", "file holding the obs ingest token")
// Text, not Options.integer: @effect/cli 0.77 rejects every value of a repeated integer option.
const pids = Options.text("pid").pipe(Options.repeated, Options.withDescription("process to trace (eBPF)"))
const allPodProcesses = Options.boolean("all-pod-processes").pipe(
  Options.withDescription(
    "trace every process of the agent's pid namespace but its own (the sidecar, with shareProcessNamespace: true)"
  )
)
const propagation = Options.boolean("propagation").pipe(
  Options.withDescription(
    "eBPF: the kernel inserts traceparent into the outbound HTTP/1.x requests of the traced cgroups and of -- COMMAND, run in a cgroup of its own (changes bytes on the wire; default $III_PROPAGATION or off)"
  )
)
const cgroups = Options.text("cgroup").pipe(
  Options.repeated,
  Options.withDescription("cgroup v2 directory whose processes are traced (eBPF)")
)
const proxyListen = text("proxy-listen", "proxy mode: HOST:PORT clients connect to")
const proxyUpstream = text("proxy-upstream", "proxy mode: HOST:PORT of the app")
const proxyEgress = text(
  "proxy-egress",
  "proxy mode: HOST:PORT of the forward proxy for outbound calls (default 127.0.0.1:0 with a command)"
)
const logLevel = Options.choice("log-level", ["trace", "debug", "info", "warn", "error", "fatal"]).pipe(
  Options.optional,
  Options.withDescription("minimum level of captured log lines (default $III_LOG_LEVEL or info)")
)
const pod = text("pod", "pod name (default $III_POD_NAME, $POD_NAME or the host name)")
const namespace = text("namespace", "namespace (default $III_NAMESPACE or $POD_NAMESPACE)")
const bufferBytes = Options.integer("buffer-bytes").pipe(
  Options.optional,
  Options.withDescription(
    "unacknowledged telemetry kept per obs URL before the oldest is dropped (default 64 MiB)"
  )
)
const nice = Options.integer("nice").pipe(
  Options.optional,
  Options.withDescription(
    "nice value of the agent's threads (0-19; 0 leaves the priority alone): on a busy core the traced apps run first (default $III_AGENT_NICE or 10)"
  )
)
const node = Options.boolean("node").pipe(
  Options.withDescription(
    'node agent: trace every pod of this Kubernetes node labelled iii.io/composition or annotated iii.io/trace: "true"'
  )
)
const nodeName = text("node-name", "node mode: the node's name (default $III_NODE_NAME or $NODE_NAME)")
const kubeconfig = text(
  "kubeconfig",
  "node mode: kubeconfig file (default: the service account in a cluster, else $KUBECONFIG or ~/.kube/config)"
)
const cgroupRoot = text(
  "cgroup-root",
  "node mode: the cgroup v2 tree (default $III_CGROUP_ROOT or the cgroup2 mount)"
)
const podLogs = text(
  "pod-logs",
  "node mode: the kubelet's pod log directory (default $III_POD_LOGS or /var/log/pods)"
)
const stateDir = text(
  "state-dir",
  "node mode: where log read positions are kept across restarts (default $III_STATE_DIR or /var/lib/iii-agent)"
)
const commandLine = Args.text({ name: "command" }).pipe(
  Args.repeated,
  Args.withDescription("-- COMMAND ARGS to start and trace")
)

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
    propagation,
    proxyListen,
    proxyUpstream,
    proxyEgress,
    logLevel,
    pod,
    namespace,
    bufferBytes,
    nice,
    node,
    nodeName,
    kubeconfig,
    cgroupRoot,
    podLogs,
    stateDir,
    commandLine
  },
  (flags) =>
    Effect.gen(function* () {
      const given = <A>(option: Option.Option<A>) => Option.getOrUndefined(option)
      const config = yield* AgentConfig.resolve({
        obs: flags.obs,
        service: given(flags.service),
        composition: given(flags.composition),
        component: given(flags.component),
        mode: flags.mode,
        tokenFile: given(flags.tokenFile),
        pids: flags.pids,
        cgroups: flags.cgroups,
        allPodProcesses: flags.allPodProcesses,
        // Absent unless given: $III_PROPAGATION decides then.
        ...(flags.propagation ? { propagation: true } : {}),
        proxyListen: given(flags.proxyListen),
        proxyUpstream: given(flags.proxyUpstream),
        proxyEgress: given(flags.proxyEgress),
        logLevel: given(flags.logLevel),
        pod: given(flags.pod),
        namespace: given(flags.namespace),
        bufferBytes: given(flags.bufferBytes),
        nice: given(flags.nice),
        node: flags.node,
        nodeName: given(flags.nodeName),
        kubeconfig: given(flags.kubeconfig),
        cgroupRoot: given(flags.cgroupRoot),
        podLogs: given(flags.podLogs),
        stateDir: given(flags.stateDir),
        command: flags.commandLine,
        version
      })
      const agentLayer = Agent.layer(config.agent).pipe(Layer.provide(Exporter.layer(config.exporter)))
      const exitCode = yield* Effect.gen(function* () {
        const agent = yield* Agent.Agent
        // Only beside the app: in proxy mode the agent is in the requests' path, where a lower
        // priority would add to their latency.
        if (agent.mode === "ebpf" && config.nice > 0) {
          const lowered = yield* Priority.lower(config.nice)
          if (lowered.failures.length > 0)
            yield* Effect.logWarning(`--nice ${config.nice}: ${lowered.failures.join("; ")}`)
        }
        return yield* config.command.length > 0
          ? TracedCommand.run(config.command, { forwardSignals: true })
          : Effect.never
      }).pipe(Effect.provide(agentLayer))
      process.exitCode = exitCode
    })
).pipe(
  Command.withDescription("Trace HTTP traffic (eBPF or proxy) and stream spans, metrics and logs to obs")
)
