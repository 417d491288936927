/**
 * The agent as its own process for bench:agent-overhead (built @iii/agent, no CLI build needed):
 *   node bench/support/agent-runner.mjs cgroup OBS_URL CGROUP_DIR     (the node agent's capture of a pod)
 *   node bench/support/agent-runner.mjs propagation OBS_URL CGROUP_DIR   (the same, with trace propagation)
 *   node bench/support/agent-runner.mjs node   OBS_URL NODE KUBECONFIG CGROUP_ROOT POD_LOGS STATE_DIR
 *   node bench/support/agent-runner.mjs proxy  OBS_URL LISTEN_PORT UPSTREAM_PORT
 * AGENT_CAPTURE (JSON): capture options added to the eBPF modes' (e.g. `{"pollIntervalMs":100}`).
 * Plain JavaScript, not TypeScript: Node's type stripping would load its TypeScript transformer into
 * the process whose RSS the bench reports (+20 MB), which a deployed agent (compiled JS) never does.
 * Prints `ready {json}` once running, `stats {json}` on SIGUSR2, and final `stats {json}` on SIGTERM,
 * after the agent stopped as `iii agent` does (drained what the kernel captured, waited for obs's acks).
 */
import * as Agent from "@iii/agent/Agent"
import * as Exporter from "@iii/agent/Exporter"
import * as Priority from "@iii/agent/Priority"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Scope from "effect/Scope"

const [mode, obsUrl, a, b, c, d, e] = process.argv.slice(2)
if (!["cgroup", "propagation", "node", "proxy"].includes(mode) || obsUrl === undefined || a === undefined) {
  console.error(
    "usage: agent-runner.mjs cgroup|propagation OBS_URL DIR | node OBS_URL NODE KUBECONFIG CGROUP_ROOT POD_LOGS STATE_DIR | proxy OBS_URL LISTEN UPSTREAM"
  )
  process.exit(2)
}

const agentId = Exporter.newAgentId()
const captureExtra = JSON.parse(process.env.AGENT_CAPTURE ?? "{}")
const options = {
  // The node agent's capture: cgroup targets only, no pid lookup, no stdout/stderr hooks.
  cgroup: { mode: "ebpf", cgroups: [a], capture: { stdio: "off", pidTargets: false, ...captureExtra } },
  propagation: {
    mode: "ebpf",
    cgroups: [a],
    propagation: true,
    capture: { stdio: "off", pidTargets: false, ...captureExtra }
  },
  node: { node: { nodeName: a, kubeconfig: b, cgroupRoot: c, podLogs: d, stateDir: e } },
  proxy: {
    mode: "proxy",
    proxy: {
      listen: { host: "127.0.0.1", port: Number(a) },
      upstream: { host: "127.0.0.1", port: Number(b) }
    }
  }
}[mode]
const agentLayer = Agent.layer({ identity: { service: "bench-app" }, ...options }).pipe(
  Layer.provide(Exporter.layer({ urls: [obsUrl], agent: { id: agentId, service: "bench-app" } })),
  Layer.provide(Logger.minimumLogLevel(LogLevel.Warning))
)

const scope = Effect.runSync(Scope.make())
const context = await Effect.runPromise(Layer.buildWithScope(agentLayer, scope))
const agent = Effect.runSync(Effect.provide(Agent.Agent, context))
// As `iii agent` does by default in eBPF mode (--nice 10).
if (agent.mode === "ebpf")
  await Effect.runPromise(Priority.lower(Number(process.env.AGENT_NICE ?? Priority.defaultNice)))

const report = async () => {
  // With --expose-gc, report live memory rather than garbage waiting for collection.
  globalThis.gc?.()
  const stats = await Effect.runPromise(agent.stats)
  console.log(
    `stats ${JSON.stringify({
      events: stats.events,
      spans: stats.spans,
      requestsDropped: stats.requestsDropped,
      spansLostInExport: Agent.spansLostInExport(stats.exporter),
      ringFullRecords: stats.capture?.dropped ?? 0,
      unrecordedRecords: stats.capture?.unrecorded ?? 0,
      abandonedRecords: stats.capture?.abandoned ?? 0,
      batches: stats.capture?.batches ?? 0,
      injected: stats.capture?.injected ?? 0,
      unframed: stats.capture?.unframed ?? 0,
      skipped: stats.capture?.skipped ?? 0,
      spansSealed: stats.exporter.spansSealed,
      node: stats.node,
      memory: Object.fromEntries(
        Object.entries(process.memoryUsage()).map(([key, bytes]) => [key, Math.round(bytes / 1048576)])
      )
    })}`
  )
}
process.on("SIGUSR2", () => void report())
process.on("SIGTERM", async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void))
  await report()
  process.exit(0)
})
// Only now: the bench signals as soon as it reads this line, and a SIGUSR2 before its handler is
// installed ends the process (the bench's 50-pod phase lost its agent that way, 7 ms after "ready",
// and then waited out its stats polls: ~15 minutes that looked like a hang).
console.log(`ready ${JSON.stringify({ mode: agent.mode, id: agentId })}`)
