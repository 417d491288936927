/**
 * The agent as an Effect Layer: picks a capture mode, runs it, and feeds the exporter.
 *
 * - eBPF mode: kernel capture of the traced processes (pids, their children, cgroups) → reassembly,
 *   HTTP parsing, spans, logs, RED and TCP metrics.
 * - proxy mode: a reverse proxy in front of the app (and optionally a forward proxy for its outbound
 *   calls) → the same spans and RED metrics; logs only from a command the agent started itself
 *   (`TracedCommand` pipes its output through `output`).
 * Mode `auto` picks eBPF when `EbpfCapture.isAvailable` says it can run, proxy otherwise (which then
 * needs a proxy configuration); the choice and the reason are logged. Forcing a mode that cannot
 * run fails with `ModeUnavailable` naming what is missing.
 *
 * Every `metricsIntervalMs` the RED/TCP metrics are flushed to the exporter; every `statsIntervalMs`
 * the agent logs events/s, spans, logs and drops.
 */

import type { Telemetry } from "@iii/core"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as EbpfCapture from "./EbpfCapture.js"
import { AgentConfigError, type EbpfCaptureError, ModeUnavailable, type ProxyError } from "./Errors.js"
import { Exporter, type ExporterStats } from "./Exporter.js"
import { findCgroup2Mount } from "./internal/CgroupTree.js"
import { nowUnixNano } from "./internal/Clock.js"
import * as CommandCgroup from "./internal/CommandCgroup.js"
import { EventProcessor, type RequestDrops } from "./internal/EventProcessor.js"
import { LineSplitter, LogEmitter } from "./internal/Logs.js"
import * as NodeMode from "./internal/NodeMode.js"
import { Recorder } from "./internal/Recorder.js"
import * as SelfMetrics from "./internal/SelfMetrics.js"
import type { Identity } from "./internal/Spans.js"
import * as ProxyMode from "./ProxyMode.js"

export type Mode = "ebpf" | "proxy"

export interface AgentOptions {
  readonly identity: Identity
  /** Default `auto`. */
  readonly mode?: Mode | "auto"
  /** Processes to trace (eBPF), with their future children. */
  readonly pids?: ReadonlyArray<number>
  /** cgroup v2 directories whose processes are traced (eBPF). */
  readonly cgroups?: ReadonlyArray<string>
  /**
   * Trace every process of the agent's pid namespace except the agent and its descendants (eBPF): the
   * sidecar setup, in a pod with `shareProcessNamespace: true`. Pids (`pids`, `trace`, spans) are then
   * the namespace's; new processes (children, restarted app containers) are traced from birth, and a
   * /proc rescan every 2 s is the safety net. Default false.
   */
  readonly allPodProcesses?: boolean
  /**
   * The node agent (eBPF): every traced pod of a Kubernetes node, each container with its own
   * identity, logs from the kubelet's log files (see `NodeOptions`). `identity` is then the agent's
   * own (its self-metrics).
   */
  readonly node?: NodeMode.NodeOptions | undefined
  /**
   * Trace propagation (eBPF), off by default since it changes bytes on the wire: the kernel inserts
   * `traceparent` (and `x-iii-correlation-id`) into the outbound HTTP/1.x requests of the traced
   * cgroups (`cgroups`; node mode: the pods annotated `iii.io/propagation: "true"`; the command the
   * agent starts, with `startsCommand`) that carry none, continuing the trace of the request the
   * thread serves. Processes traced by pid only are not covered (no cgroup to attach to). When the
   * kernel cannot (no cgroup v2, program types missing) the agent says so and runs without it.
   * README "Trace propagation".
   */
  readonly propagation?: boolean
  /**
   * The agent starts the traced command itself (`TracedCommand`, `iii agent -- COMMAND`). With
   * `propagation` (eBPF) it then makes a cgroup v2 directory for the command under its own cgroup
   * (`AgentService.commandCgroup`), propagating, removed when the agent stops; where it cannot, it
   * says so at start and the command runs without propagation. Default false.
   */
  readonly startsCommand?: boolean
  /** Proxy mode's addresses. */
  readonly proxy?: ProxyMode.ProxyOptions | undefined
  /** Minimum level of captured log lines. Default `info`. */
  readonly logLevel?: Telemetry.LogLevel
  /** Distinct routes per span kind before `{other}`. Default 500. */
  readonly maxRoutes?: number
  /** Metrics flush interval. Default 10 s. */
  readonly metricsIntervalMs?: number
  /** Self-report interval (events/s, drops). Default 60 s. */
  readonly statsIntervalMs?: number
  /** Connections silent this long are ended (their close was missed). Default 10 minutes. */
  readonly idleConnectionMs?: number
  /**
   * At shutdown, how long the agent keeps turning what it already saw into telemetry: eBPF, what the
   * kernel captured (the rest is counted as `capture.abandoned`); proxy, the requests under way (the
   * rest are cut, a `no_response` span each). The exporter then has its own `drainTimeoutMs` for
   * obs's acks. Default 5 s.
   */
  readonly shutdownTimeoutMs?: number
  /** Passed to the kernel capture (payload bytes, ring buffer size…). */
  readonly capture?: Omit<EbpfCapture.Options, "pids" | "cgroups">
}

export interface AgentStats {
  readonly mode: Mode
  readonly events: number
  readonly spans: number
  readonly logs: number
  readonly openConnections: number
  /**
   * Requests answered (or still waiting when the agent stopped) that did not become spans, by
   * reason. With `spans` and the exporter's dropped spans, every request the traced processes
   * answered is accounted for. (Proxy mode: always zero, every request it forwards is a span.)
   */
  readonly requestsDropped: RequestDrops
  /** The kernel capture's counters (eBPF mode): records the ring could not take, and so on. */
  readonly capture: EbpfCapture.Counters | undefined
  /** Node mode: the pods and containers traced. */
  readonly node: NodeMode.NodeStats | undefined
  readonly exporter: ExporterStats
}

/** Spans the exporter lost: its buffer was full, obs rejected them, or they were unsent at shutdown. */
export const spansLostInExport = (exporter: ExporterStats): number =>
  exporter.spansDropped + exporter.spansRejected + exporter.spansUnsent

/** One line saying where everything went (what the agent logs every minute and when it stops). */
export const describeStats = (s: AgentStats): string => {
  const drops = s.requestsDropped
  const notTraced = drops.ring_full + drops.unparsed + drops.shutdown
  const capture =
    s.capture === undefined
      ? ""
      : `; kernel ring full: ${s.capture.dropped} records (${s.capture.unrecorded} unattributed)` +
        (s.capture.abandoned > 0 ? `, ${s.capture.abandoned} abandoned at stop` : "")
  const e = s.exporter
  const node =
    s.node === undefined
      ? ""
      : `${s.node.pods} pods, ${s.node.containers} containers` +
        (s.node.unlocated > 0 ? ` (${s.node.unlocated} without a cgroup yet)` : "") +
        `, ${s.node.logLines} log lines read; `
  return (
    node +
    `${s.spans} spans, ${s.logs} logs, ${s.openConnections} open connections; ` +
    `requests not traced: ${notTraced} (ring full ${drops.ring_full}, unparsed ${drops.unparsed}, shutdown ${drops.shutdown})` +
    capture +
    `; export dropped: ${spansLostInExport(e)} spans (buffer full ${e.spansDropped}, rejected ${e.spansRejected}, ` +
    `unsent at stop ${e.spansUnsent}), ${e.logsDropped + e.logsRejected + e.logsUnsent} logs, ` +
    `${e.metricsDropped + e.metricsRejected + e.metricsUnsent} metrics (buffered ${e.bufferedBytes} B)`
  )
}

export interface AgentService {
  readonly mode: Mode
  /** Starts tracing another process (eBPF); a no-op in proxy mode. */
  readonly trace: (pid: number) => Effect.Effect<void, EbpfCaptureError>
  readonly stats: Effect.Effect<AgentStats>
  /** Proxy mode: where the proxies listen. */
  readonly proxy: ProxyMode.ProxyServer | undefined
  /**
   * The cgroup v2 directory a command the agent starts (`TracedCommand`) is put into before it runs,
   * so that its outbound requests get a `traceparent` (`propagation` and `startsCommand` on, and the
   * kernel able to); undefined otherwise.
   */
  readonly commandCgroup: string | undefined
  /**
   * How a command the agent starts (`TracedCommand`) gets its stdout/stderr: `inherit` (the kernel
   * capture sees the writes through the write syscalls), `pipe` (socketpairs the kernel capture sees
   * through its socket hooks, echoed by the agent: eBPF with `capture.stdio: "sockets"`), `parse`
   * (piped through `output`, which makes the log lines: proxy mode).
   */
  readonly commandOutput: "inherit" | "pipe" | "parse"
  /** Output of a command the agent started (`parse`): split into lines that become logs. */
  readonly output: (stream: "stdout" | "stderr", chunk: Uint8Array) => void
}

export class Agent extends Context.Tag("@iii/agent/Agent")<Agent, AgentService>() {}

/** Decides the mode from what was asked and what this host can do. Pure. */
export const chooseMode = (
  requested: Mode | "auto",
  ebpf: { readonly available: boolean; readonly reasons: ReadonlyArray<string> },
  proxyConfigured: boolean
): { readonly mode: Mode; readonly why: string } | ModeUnavailable | AgentConfigError => {
  const ebpfWhy = ebpf.reasons.join("; ")
  switch (requested) {
    case "ebpf":
      return ebpf.available
        ? { mode: "ebpf", why: "forced by --mode ebpf" }
        : new ModeUnavailable({ mode: "ebpf", reason: ebpfWhy })
    case "proxy":
      return proxyConfigured
        ? { mode: "proxy", why: "forced by --mode proxy" }
        : new AgentConfigError({
            message: "proxy mode needs --proxy-listen HOST:PORT and --proxy-upstream HOST:PORT"
          })
    case "auto":
      if (ebpf.available) return { mode: "ebpf", why: "eBPF capture is available" }
      if (proxyConfigured) return { mode: "proxy", why: `eBPF is not available (${ebpfWhy})` }
      return new ModeUnavailable({
        mode: "ebpf",
        reason: `${ebpfWhy}; to run without eBPF, give --proxy-listen and --proxy-upstream (proxy mode)`
      })
  }
}

const totalsOf = (s: AgentStats): SelfMetrics.Totals => ({
  spans: s.spans,
  ...s.requestsDropped,
  export: spansLostInExport(s.exporter),
  recordsLost: s.capture?.dropped ?? 0
})

export type AgentError = ModeUnavailable | AgentConfigError | ProxyError | EbpfCapture.StartError

export type NodeOptions = NodeMode.NodeOptions
export type { RequestDrops } from "./internal/EventProcessor.js"
export type { NodeStats } from "./internal/NodeMode.js"
export type { Identity } from "./internal/Spans.js"

/** Runs the agent until the scope closes. */
export const make = (
  options: AgentOptions
): Effect.Effect<AgentService, AgentError, Scope.Scope | Exporter> =>
  Effect.gen(function* () {
    const exporter = yield* Exporter
    // A forced proxy mode does not even load the native addon.
    const availability =
      options.mode === "proxy"
        ? { available: false, reasons: ["proxy mode forced"], notes: [] }
        : yield* EbpfCapture.isAvailable
    if (options.node !== undefined && options.mode === "proxy")
      return yield* new AgentConfigError({ message: "node mode traces pods with eBPF: it has no proxy mode" })
    // Node mode is eBPF or nothing: it fails naming what is missing rather than fall back.
    const requested = options.node === undefined ? (options.mode ?? "auto") : "ebpf"
    const chosen = chooseMode(requested, availability, options.proxy !== undefined)
    if (chosen instanceof ModeUnavailable || chosen instanceof AgentConfigError) return yield* chosen
    yield* Effect.logInfo(`iii agent: ${chosen.mode} mode (${chosen.why})`)
    for (const note of availability.notes) yield* Effect.logInfo(note)

    const metricsInterval = `${options.metricsIntervalMs ?? 10_000} millis` as const
    const statsIntervalMs = options.statsIntervalMs ?? 60_000
    const identity = options.identity
    let stats: Effect.Effect<AgentStats> | undefined
    let service: AgentService
    // The RED metrics and the agent's own counters (`SelfMetrics`), flushed together.
    let selfTotals = SelfMetrics.zero
    let selfSince = nowUnixNano()
    const flushMetrics = (flush: (nowNs: bigint) => ReadonlyArray<Telemetry.MetricPoint>) =>
      Effect.gen(function* () {
        const now = nowUnixNano()
        for (const point of flush(now)) exporter.metric(point)
        if (stats === undefined) return
        const totals = totalsOf(yield* stats)
        for (const point of SelfMetrics.points(identity, selfTotals, totals, now, Number(now - selfSince)))
          exporter.metric(point)
        selfTotals = totals
        selfSince = now
      })
    // Registered first, so it runs last: after the capture drained and closed (final figures).
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() =>
        stats === undefined
          ? Effect.void
          : Effect.flatMap(stats, (s) => Effect.logInfo(`stopped: ${describeStats(s)}`))
      )
    )

    if (chosen.mode === "ebpf") {
      const node = options.node
      const captureOptions: EbpfCapture.Options = {
        ...options.capture,
        pids: options.pids ?? [],
        cgroups: options.cgroups ?? [],
        ...(options.allPodProcesses === true ? { pidNamespace: "own", traceAllInPidNamespace: true } : {}),
        // A node agent reads logs from the kubelet's files: writes to stdout/stderr are not captured.
        ...(node === undefined ? {} : { enableCgroups: true, stdio: "off", pidTargets: false })
      }
      // Made before the capture starts, so that it is removed after the capture closed.
      const commandDirectory =
        options.propagation === true && options.startsCommand === true && node === undefined
          ? yield* CommandCgroup.make(findCgroup2Mount())
          : undefined
      if (commandDirectory?._tag === "Unavailable")
        yield* Effect.logWarning(
          `propagation: off for the command: it attaches to cgroups, and the agent cannot make one for it (${commandDirectory.reason})`
        )
      const commandCgroup = commandDirectory?._tag === "Made" ? commandDirectory.path : undefined
      const propagatingCgroups = [
        ...(options.cgroups ?? []),
        ...(commandCgroup === undefined ? [] : [commandCgroup])
      ]
      const propagating =
        options.propagation === true && (node !== undefined || propagatingCgroups.length > 0)
      if (options.propagation === true && !propagating && commandDirectory === undefined)
        yield* Effect.logWarning(
          "propagation: off: it attaches to cgroups, and only pids are traced (give --cgroup, run the node agent, or let the agent start the command: -- COMMAND)"
        )
      const started = propagating
        ? yield* EbpfCapture.start({
            ...captureOptions,
            cgroups: propagatingCgroups,
            propagation: true
          }).pipe(
            Effect.map((capture) => ({ capture, propagated: true })),
            Effect.tap(() =>
              Effect.logInfo(
                "propagation: on: the kernel inserts traceparent into the traced cgroups' outbound HTTP/1.x requests" +
                  (commandCgroup === undefined ? "" : ` (the command's: ${commandCgroup})`)
              )
            ),
            Effect.catchAll((error) =>
              Effect.logWarning(`propagation: off: the kernel cannot: ${error.message}`).pipe(
                Effect.zipRight(EbpfCapture.start(captureOptions)),
                Effect.map((capture) => ({ capture, propagated: false }))
              )
            )
          )
        : { capture: yield* EbpfCapture.start(captureOptions), propagated: false }
      const capture = started.capture
      let nodeMode: NodeMode.NodeMode | undefined
      const processor = new EventProcessor(
        {
          identity,
          identityOf: (target) => nodeMode?.identityOf(target),
          logLevel: options.logLevel ?? "info",
          logs: node === undefined,
          ...(options.maxRoutes === undefined ? {} : { maxRoutes: options.maxRoutes })
        },
        { span: exporter.span, log: exporter.log },
        nowUnixNano()
      )
      if (node === undefined)
        yield* Effect.logInfo(
          (options.allPodProcesses === true
            ? "tracing every process of the agent's pid namespace but the agent's own (fork tracking, /proc rescan), pids"
            : "tracing pids") +
            ` [${(options.pids ?? []).join(", ")}] and their children` +
            ((options.cgroups ?? []).length > 0 ? `, cgroups [${(options.cgroups ?? []).join(", ")}]` : "")
        )
      const consumer = yield* capture.batches.pipe(
        Stream.runForEach((batch) => Effect.sync(() => processor.process(batch))),
        Effect.forkScoped
      )
      const idleNs = BigInt(options.idleConnectionMs ?? 600_000) * 1_000_000n
      yield* flushMetrics((now) => processor.flushMetrics(now)).pipe(
        Effect.zipRight(
          Effect.sync(() => {
            const now = nowUnixNano()
            processor.sweep(now - idleNs, now)
          })
        ),
        Effect.repeat(Schedule.spaced(metricsInterval)),
        Effect.forkScoped
      )
      // Runs before the consumer is interrupted and the capture closed (finalizers run in reverse):
      // what the kernel captured before the stop becomes telemetry, within a bounded time.
      const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 5000
      yield* Effect.addFinalizer(() =>
        Effect.gen(function* () {
          yield* capture.drain
          const drained = yield* Fiber.join(consumer).pipe(
            Effect.timeoutOption(`${shutdownTimeoutMs} millis`)
          )
          if (drained._tag === "None")
            yield* Effect.logWarning(
              `stopping: the capture's backlog was not processed within ${shutdownTimeoutMs} ms; the rest is abandoned (counted)`
            )
          processor.finish(nowUnixNano())
          yield* flushMetrics((now) => processor.flushMetrics(now))
        })
      )
      // After the drain's finalizer, so it runs first: the last log lines and their positions.
      if (node !== undefined)
        nodeMode = yield* NodeMode.start(
          { ...node, propagate: started.propagated },
          capture,
          processor,
          exporter
        )
      const tracking = nodeMode
      stats = Effect.gen(function* () {
        const processed = processor.stats
        return {
          mode: "ebpf" as const,
          events: processed.events,
          spans: processed.spans,
          logs: processed.logs,
          openConnections: processor.openConnections,
          requestsDropped: processed.requestsDropped,
          capture: yield* capture.counters,
          node: tracking?.stats(),
          exporter: yield* exporter.stats
        }
      })
      // A command's output through socketpairs the kernel capture sees (stdio "sockets"): piped
      // and echoed, not parsed here.
      const commandOutput = options.capture?.stdio === "sockets" ? ("pipe" as const) : ("inherit" as const)
      service = {
        mode: "ebpf",
        trace: (pid) => capture.addPid(pid),
        stats,
        proxy: undefined,
        commandCgroup: started.propagated ? commandCgroup : undefined,
        commandOutput,
        output: () => {}
      }
    } else {
      const proxyOptions = options.proxy
      if (proxyOptions === undefined)
        return yield* new AgentConfigError({ message: "proxy mode needs a proxy configuration" })
      const recorder = new Recorder(identity, exporter, nowUnixNano(), options.maxRoutes)
      const server = yield* ProxyMode.make(proxyOptions, recorder, options.shutdownTimeoutMs)
      yield* Effect.logInfo(
        `proxying ${server.listening.host}:${server.listening.port} → ${proxyOptions.upstream.host}:${proxyOptions.upstream.port}` +
          (server.egressListening === undefined
            ? ""
            : `, outbound calls via HTTP_PROXY=http://${server.egressListening.host}:${server.egressListening.port}`)
      )
      yield* flushMetrics((now) => recorder.red.flush(now)).pipe(
        Effect.repeat(Schedule.spaced(metricsInterval)),
        Effect.forkScoped
      )
      yield* Effect.addFinalizer(() => flushMetrics((now) => recorder.red.flush(now)))
      const logs = new LogEmitter(identity, options.logLevel ?? "info", exporter)
      const lines = { stdout: new LineSplitter(), stderr: new LineSplitter() }
      const output = (stream: "stdout" | "stderr", chunk: Uint8Array) => {
        const now = nowUnixNano()
        for (const { line, cut } of lines[stream].push(chunk, 0))
          logs.emit(line, cut, stream, now, server.servingOne)
      }
      stats = Effect.gen(function* () {
        return {
          mode: "proxy" as const,
          events: recorder.spans,
          spans: recorder.spans,
          logs: logs.stats.logs,
          openConnections: server.inFlight(),
          requestsDropped: { ring_full: 0, unparsed: 0, shutdown: 0 },
          capture: undefined,
          node: undefined,
          exporter: yield* exporter.stats
        }
      })
      service = {
        mode: "proxy",
        trace: () => Effect.void,
        stats,
        proxy: server,
        commandCgroup: undefined,
        commandOutput: "parse",
        output
      }
    }

    let previous = { events: 0, at: Date.now() }
    const report = Effect.flatMap(service.stats, (s) => {
      const now = Date.now()
      const rate = ((s.events - previous.events) * 1000) / Math.max(1, now - previous.at)
      previous = { events: s.events, at: now }
      return Effect.logInfo(`${rate.toFixed(1)} events/s, ${describeStats(s)}`)
    })
    yield* Effect.sleep(`${statsIntervalMs} millis`).pipe(
      Effect.zipRight(report),
      Effect.forever,
      Effect.forkScoped
    )
    return service
  })

/** The agent as a layer; it needs an `Exporter` (see `Exporter.layer`). */
export const layer = (options: AgentOptions): Layer.Layer<Agent, AgentError, Exporter> =>
  Layer.scoped(Agent, make(options))
