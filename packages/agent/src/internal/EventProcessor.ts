/**
 * From kernel events to telemetry: CaptureEvents (eBPF mode) in; spans and log records out to a sink,
 * RED metrics accumulated for the periodic flush. Synchronous and allocation-light: it runs on the
 * agent's hot path, one call per batch of events.
 *
 * Every event carries its process's target (`CaptureEvent.target`): the identity its telemetry carries
 * comes from `identityOf(target)` (a node agent: one per container), and each target has its own
 * route table and RED metrics.
 *
 * Socket events go through per-connection reassembly (`ConnectionTracker`) and HTTP parsing; writes to
 * fds 1 and 2 that are not sockets we track are log output. Each server request in flight is indexed
 * by the thread that read it, which is how outbound calls and log lines written by a thread serving
 * exactly one request are tied to that request (see `Spans` for the rule).
 */
import type { Telemetry } from "@iii/core"
import type { CaptureEvent, TraceEvent } from "../CaptureEvent.js"
import {
  ConnectionTracker,
  type DropReason,
  type HttpExchange,
  type PendingRequest
} from "./ConnectionTracker.js"
import { LineSplitter, LogEmitter } from "./Logs.js"
import { Recorder } from "./Recorder.js"
import {
  clientContext,
  type Identity,
  injectedClientContext,
  kernelServerContext,
  type SpanContext,
  serverContext
} from "./Spans.js"

/** Where finished telemetry goes (the exporter, or a test's array). */
export interface TelemetrySink {
  span(span: Telemetry.Span): void
  log(record: Telemetry.LogRecord): void
}

export interface ProcessorOptions {
  /** The identity of every target `identityOf` does not name (target 1: the pids given at start). */
  readonly identity: Identity
  /** The identity of a target (consulted once, when the target's first telemetry comes). */
  readonly identityOf?: (target: number) => Identity | undefined
  /** Log lines below this level are dropped. Default `info`. */
  readonly logLevel?: Telemetry.LogLevel
  /** Distinct routes per span kind before `{other}`. Default 500. */
  readonly maxRoutes?: number
  /** Capture log lines from fds 1/2. Default true. */
  readonly logs?: boolean
}

/** Requests that did not become spans, by reason (see `DropReason`). */
export type RequestDrops = Record<DropReason, number>

export interface ProcessorStats {
  events: number
  spans: number
  logs: number
  logsBelowLevel: number
  connections: number
  /** Requests answered (or waiting at shutdown) that did not become spans, by reason. */
  requestsDropped: RequestDrops
  /** Writes to stdout/stderr the kernel could not record: their lines are cut or missing. */
  logWritesLost: number
  /** Records the kernel lost on sockets no connection was tracked for. */
  lostUntracked: number
  /**
   * Trace propagation: request ids the kernel reported that a span took (`used`), and those no
   * request took or that disagreed with what user space parsed (`unmatched`).
   */
  kernelIds: { used: number; unmatched: number }
}

type Pending = PendingRequest<SpanContext>

const lineKey = (pid: number, fd: number) => pid * 4 + fd
const noContext = () => undefined

/** What one target's telemetry goes through. */
interface Target {
  readonly recorder: Recorder
  readonly logs: LogEmitter
  /** No longer traced: flushed one last time, then forgotten. */
  retired: boolean
}

export class EventProcessor {
  private readonly counts = { events: 0, spans: 0, connections: 0, logWritesLost: 0 }
  private readonly dropped: RequestDrops = { ring_full: 0, unparsed: 0, shutdown: 0 }
  private readonly tracker: ConnectionTracker<SpanContext>
  /** Server requests in flight, by the thread serving them. */
  private readonly serving = new Map<number, Set<Pending>>()
  /** Partial log lines, by pid + fd, with the target of their process. */
  private readonly lines = new Map<number, { readonly splitter: LineSplitter; readonly target: number }>()
  private readonly captureLogs: boolean
  private readonly targets = new Map<number, Target>()
  /** Logs emitted by targets already forgotten. */
  private logsOfForgotten = { logs: 0, belowLevel: 0 }
  /** Trace records for the next data event of their socket (they come just before it). */
  private traced: Array<TraceEvent> = []
  /** While that data event is parsed: its trace records, for the requests it begins or ends. */
  private kernelIds: Array<TraceEvent> = []
  private readonly kernelIdCounts = { used: 0, unmatched: 0 }

  constructor(
    private readonly options: ProcessorOptions,
    private readonly sink: TelemetrySink,
    private readonly startNs: bigint
  ) {
    this.captureLogs = options.logs ?? true
    this.tracker = new ConnectionTracker<SpanContext>({
      onRequest: (request) => this.onRequest(request),
      onExchange: (exchange) => this.onExchange(exchange),
      onConnectionEnd: (connection, endNs) => {
        this.counts.connections++
        this.target(connection.target).recorder.red.recordConnection(connection, endNs)
      },
      onDropped: (_, reason, request) => {
        this.dropped[reason]++
        if (request !== undefined) this.stopServing(request)
      }
    })
  }

  private target(index: number): Target {
    let target = this.targets.get(index)
    if (target === undefined) {
      const identity = this.options.identityOf?.(index) ?? this.options.identity
      target = {
        recorder: new Recorder(identity, this.sink, this.startNs, this.options.maxRoutes),
        logs: new LogEmitter(identity, this.options.logLevel ?? "info", this.sink),
        retired: false
      }
      this.targets.set(index, target)
    }
    target.retired = false
    return target
  }

  /**
   * A log line that came another way than the capture (a node agent reads the container runtime's
   * log files): parsed and emitted as the target's, tied to the request `context` names (default
   * none: only the trace or correlation id the line itself names).
   */
  logLine(
    target: number,
    line: string,
    cut: boolean,
    stream: "stdout" | "stderr",
    timestampNs: bigint,
    context: () => SpanContext | undefined = noContext
  ): void {
    this.target(target).logs.emit(line, cut, stream, timestampNs, context)
  }

  /** The target is no longer traced: its metrics are flushed one last time, then it is forgotten. */
  retire(index: number): void {
    const target = this.targets.get(index)
    if (target !== undefined) target.retired = true
  }

  /** The RED metrics of every target for the interval ending at `nowNs`. */
  flushMetrics(nowNs: bigint): Array<Telemetry.MetricPoint> {
    const points: Array<Telemetry.MetricPoint> = []
    for (const [index, target] of this.targets) {
      for (const point of target.recorder.red.flush(nowNs)) points.push(point)
      if (target.retired) {
        this.logsOfForgotten = {
          logs: this.logsOfForgotten.logs + target.logs.stats.logs,
          belowLevel: this.logsOfForgotten.belowLevel + target.logs.stats.belowLevel
        }
        this.targets.delete(index)
      }
    }
    return points
  }

  get stats(): ProcessorStats {
    let logs = this.logsOfForgotten.logs
    let logsBelowLevel = this.logsOfForgotten.belowLevel
    for (const target of this.targets.values()) {
      logs += target.logs.stats.logs
      logsBelowLevel += target.logs.stats.belowLevel
    }
    return {
      ...this.counts,
      logs,
      logsBelowLevel,
      requestsDropped: { ...this.dropped },
      lostUntracked: this.tracker.lostUntracked,
      kernelIds: { ...this.kernelIdCounts }
    }
  }

  /** Open connections being tracked. */
  get openConnections(): number {
    return this.tracker.size
  }

  process(events: Iterable<CaptureEvent>): void {
    for (const event of events) this.handle(event)
  }

  handle(event: CaptureEvent): void {
    this.counts.events++
    switch (event.kind) {
      case "data": {
        if (event.fd <= 2 && event.direction === "egress" && !this.tracker.has(event.pid, event.fd)) {
          if (event.fd > 0 && this.captureLogs) this.logOutput(event)
          return
        }
        if (this.traced.length > 0) {
          this.dataWithIds(event)
          return
        }
        this.trackData(event)
        return
      }
      case "open":
        this.tracker.open(
          event.pid,
          event.fd,
          undefined,
          event.timestampNs,
          event.localAddress === undefined
            ? undefined
            : { address: event.localAddress, port: event.localPort ?? 0 },
          event.peerAddress === undefined
            ? undefined
            : { address: event.peerAddress, port: event.peerPort ?? 0 },
          event.target
        )
        return
      case "close":
        this.tracker.close(event.pid, event.fd, event.timestampNs)
        this.flushLines(event.pid, event.fd, event.timestampNs)
        return
      case "exit":
        this.tracker.closeProcess(event.pid, event.timestampNs)
        this.flushLines(event.pid, 1, event.timestampNs)
        this.flushLines(event.pid, 2, event.timestampNs)
        return
      case "fork":
        return
      case "lost":
        this.lost(event)
        return
      case "trace": {
        const first = this.traced[0]
        if (first !== undefined && (first.pid !== event.pid || first.fd !== event.fd)) this.dropIds()
        this.traced.push(event)
        return
      }
    }
  }

  /** A data event the kernel reported request ids for: its requests take them as they are parsed. */
  private dataWithIds(event: Extract<CaptureEvent, { kind: "data" }>): void {
    const first = this.traced[0]
    if (first !== undefined && first.pid === event.pid && first.fd === event.fd) this.kernelIds = this.traced
    else this.kernelIdCounts.unmatched += this.traced.length
    this.traced = []
    this.trackData(event)
    this.kernelIdCounts.unmatched += this.kernelIds.length
    this.kernelIds = []
  }

  private trackData(event: Extract<CaptureEvent, { kind: "data" }>): void {
    this.tracker.data(
      event.pid,
      event.tid,
      event.fd,
      event.direction,
      event.payload,
      event.totalLength,
      event.timestampNs,
      event.target
    )
  }

  private dropIds(): void {
    this.kernelIdCounts.unmatched += this.traced.length
    this.traced = []
  }

  /** The kernel's ids for a request `request` parsed from the data event being handled, if any. */
  private takeKernelIds(role: "server" | "client", startNs: bigint): TraceEvent | undefined {
    const index = this.kernelIds.findIndex(
      // A server's ids are for the request the data event begins.
      (ids) => ids.role === role && (role === "client" || ids.timestampNs === startNs)
    )
    if (index < 0) return undefined
    const [ids] = this.kernelIds.splice(index, 1)
    return ids
  }

  /** A record the kernel could not write: the gap goes where it was in its connection's stream. */
  private lost(event: Extract<CaptureEvent, { kind: "lost" }>): void {
    switch (event.lost) {
      case "data": {
        const direction = event.direction ?? "ingress"
        if (event.fd <= 2 && direction === "egress" && !this.tracker.has(event.pid, event.fd)) {
          this.counts.logWritesLost++
          // What was buffered of the line is cut where the write went missing.
          this.flushLines(event.pid, event.fd, event.timestampNs)
          return
        }
        this.tracker.lost(event.pid, event.fd, direction, event.totalLength, event.timestampNs)
        return
      }
      case "close":
        this.tracker.close(event.pid, event.fd, event.timestampNs)
        return
      case "open":
        // A new connection on this fd began: whatever was tracked on it ended.
        this.tracker.close(event.pid, event.fd, event.timestampNs)
        return
      case "exit":
        this.tracker.closeProcess(event.pid, event.timestampNs)
        return
      case "fork":
      case "trace":
        return
    }
  }

  /**
   * The agent stops: every open connection is abandoned as it stands (responses under way become
   * spans, requests still waiting are counted as dropped for `shutdown`), and partial log lines are
   * emitted.
   */
  finish(nowNs: bigint): void {
    this.tracker.abandonAll()
    for (const key of [...this.lines.keys()]) {
      const fd = key % 4
      this.flushLines((key - fd) / 4, fd, nowNs)
    }
  }

  /** Ends connections silent since `idleSinceNs` (their close event was lost). */
  sweep(idleSinceNs: bigint, nowNs: bigint): number {
    const swept = this.tracker.sweep(idleSinceNs, nowNs)
    for (const [tid, set] of this.serving) if (set.size === 0) this.serving.delete(tid)
    return swept
  }

  /** The context the kernel's ids give `request` (trace propagation), if it reported any for it. */
  private kernelContext(request: Pending): SpanContext | undefined {
    if (this.kernelIds.length === 0) return undefined
    const server = request.connection.role === "server"
    const ids = this.takeKernelIds(server ? "server" : "client", request.startNs)
    if (ids === undefined) return undefined
    const context = server ? kernelServerContext(request.head, ids) : injectedClientContext(request.head, ids)
    if (context === undefined) this.kernelIdCounts.unmatched++
    else this.kernelIdCounts.used++
    return context
  }

  private onRequest(request: Pending): void {
    const head = request.head
    const server = request.connection.role === "server"
    request.context =
      this.kernelContext(request) ??
      (server ? serverContext(head) : clientContext(head, this.servedBy(request.tid)))
    if (!server) return
    let set = this.serving.get(request.tid)
    if (set === undefined) {
      set = new Set()
      this.serving.set(request.tid, set)
    }
    set.add(request)
  }

  private stopServing(request: Pending): void {
    this.serving.get(request.tid)?.delete(request)
  }

  /** The context of the one request `tid` is serving, if it serves exactly one. */
  private servedBy(tid: number): SpanContext | undefined {
    const set = this.serving.get(tid)
    if (set === undefined || set.size !== 1) return undefined
    for (const only of set) return only.context
    return undefined
  }

  private onExchange(exchange: HttpExchange<SpanContext>): void {
    const role = exchange.connection.role ?? "server"
    // The exchange is the pending request completed in place. Emptied sets stay (one per serving
    // thread) and are swept with idle connections.
    if (role === "server") this.stopServing(exchange)
    const peer = exchange.connection.peer
    this.target(exchange.connection.target).recorder.record({
      role,
      context: exchange.context ?? serverContext(exchange.head),
      request: exchange.head,
      statusCode: exchange.response?.statusCode,
      startNs: exchange.startNs,
      endNs: exchange.endNs,
      outcome: exchange.outcome,
      peerAddress: peer?.address,
      peerPort: peer?.port
    })
    this.counts.spans++
  }

  private logOutput(event: Extract<CaptureEvent, { kind: "data" }>): void {
    const key = lineKey(event.pid, event.fd)
    let lines = this.lines.get(key)
    if (lines === undefined) {
      lines = { splitter: new LineSplitter(), target: event.target }
      this.lines.set(key, lines)
    }
    const uncaptured = Math.max(0, event.totalLength - event.payload.byteLength)
    const stream = event.fd === 1 ? "stdout" : "stderr"
    for (const { line, cut } of lines.splitter.push(event.payload, uncaptured)) {
      this.emitLine(lines.target, line, cut, stream, event.tid, event.timestampNs)
    }
  }

  private flushLines(pid: number, fd: number, timestampNs: bigint): void {
    if (fd !== 1 && fd !== 2) return
    const key = lineKey(pid, fd)
    const lines = this.lines.get(key)
    if (lines === undefined) return
    this.lines.delete(key)
    const rest = lines.splitter.flush()
    if (rest !== undefined)
      this.emitLine(lines.target, rest, false, fd === 1 ? "stdout" : "stderr", 0, timestampNs)
  }

  private emitLine(
    target: number,
    line: string,
    cut: boolean,
    stream: "stdout" | "stderr",
    tid: number,
    timestampNs: bigint
  ) {
    this.target(target).logs.emit(line, cut, stream, timestampNs, () => this.servedBy(tid))
  }
}
