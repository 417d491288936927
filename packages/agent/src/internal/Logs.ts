/**
 * Log capture: what traced processes write to stdout/stderr, split into lines, each with a level and,
 * when the line names one, the trace or correlation id it belongs to.
 *
 * Level, first match wins:
 *   1. JSON lines (`{…}`): the `level`, `severity`, `lvl`, `levelname` or `log.level` field — a name
 *      (`info`, `WARNING`, `err`, `critical`…) or a pino/bunyan number (10 trace, 20 debug, 30 info,
 *      40 warn, 50 error, 60 fatal).
 *   2. logfmt `level=warn`, or a level word near the start of the line: `[ERROR]`, `WARN:`,
 *      `2025-01-01T00:00:00Z INFO …`, `error: …`.
 *   3. otherwise `info` on stdout and `error` on stderr (what Kubernetes log shippers commonly assume).
 * Trace: JSON fields `traceId`/`trace_id`/`trace.id`, `spanId`/`span_id`, `correlationId`/`correlation_id`,
 * `traceparent`; in text, `trace_id=<32 hex>`, `traceparent=00-…`, `correlation_id=<id>`.
 * Lines longer than 16 KiB are cut (the rest of the line is dropped, the cut noted in an attribute).
 */

import type * as Telemetry from "@iii/core/Telemetry"
import * as Conventions from "@iii/core/TelemetryConventions"
import { type Identity, identityAttributes, resourceOf, type SpanContext } from "./Spans.js"

type LogLevel = Telemetry.LogLevel

export interface ParsedLine {
  readonly level: LogLevel
  readonly traceId: string | undefined
  readonly spanId: string | undefined
  readonly correlationId: string | undefined
}

export const maxLineBytes = 16 * 1024

const levelNames: Record<string, LogLevel> = {
  trace: "trace",
  verbose: "trace",
  debug: "debug",
  dbg: "debug",
  info: "info",
  information: "info",
  informational: "info",
  notice: "info",
  log: "info",
  warn: "warn",
  warning: "warn",
  error: "error",
  err: "error",
  fatal: "fatal",
  critical: "fatal",
  crit: "fatal",
  panic: "fatal",
  alert: "fatal",
  emergency: "fatal",
  emerg: "fatal"
}

const levelFromNumber = (n: number): LogLevel | undefined =>
  n >= 60
    ? "fatal"
    : n >= 50
      ? "error"
      : n >= 40
        ? "warn"
        : n >= 30
          ? "info"
          : n >= 20
            ? "debug"
            : n >= 10
              ? "trace"
              : undefined

const levelFromValue = (value: unknown): LogLevel | undefined => {
  if (typeof value === "string") return levelNames[value.trim().toLowerCase()]
  if (typeof value === "number") return levelFromNumber(value)
  return undefined
}

const traceIdPattern = /^[0-9a-f]{32}$/
const spanIdPattern = /^[0-9a-f]{16}$/

const stringField = (record: Record<string, unknown>, names: ReadonlyArray<string>): string | undefined => {
  for (const name of names) {
    const value = record[name]
    if (typeof value === "string" && value.length > 0 && value.length <= 256) return value
  }
  return undefined
}

const fromTraceparent = (value: string | undefined): { traceId?: string; spanId?: string } => {
  const match =
    value === undefined ? null : /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}/.exec(value)
  return match === null ? {} : { traceId: match[1] ?? "", spanId: match[2] ?? "" }
}

const parseJsonLine = (line: string): ParsedLine | undefined => {
  let record: unknown
  try {
    record = JSON.parse(line)
  } catch {
    return undefined
  }
  if (typeof record !== "object" || record === null || Array.isArray(record)) return undefined
  const fields = record as Record<string, unknown>
  const nestedLog = fields.log
  const level =
    levelFromValue(fields.level) ??
    levelFromValue(fields.severity) ??
    levelFromValue(fields.lvl) ??
    levelFromValue(fields.levelname) ??
    levelFromValue(fields["log.level"]) ??
    (typeof nestedLog === "object" && nestedLog !== null
      ? levelFromValue((nestedLog as Record<string, unknown>).level)
      : undefined)
  const parent = fromTraceparent(stringField(fields, ["traceparent"]))
  const traceId = stringField(fields, ["traceId", "trace_id", "trace.id", "traceid"]) ?? parent.traceId
  const spanId = stringField(fields, ["spanId", "span_id", "span.id", "spanid"]) ?? parent.spanId
  return {
    level: level ?? "info",
    traceId: traceId !== undefined && traceIdPattern.test(traceId) ? traceId : undefined,
    spanId: spanId !== undefined && spanIdPattern.test(spanId) ? spanId : undefined,
    correlationId: stringField(fields, ["correlationId", "correlation_id", "x-iii-correlation-id"])
  }
}

const logfmtLevel = /\b(?:level|lvl|severity)=["']?([A-Za-z]+)/
const levelWord =
  /(?:^|[\s[(|<])(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|FATAL|CRITICAL|PANIC)(?=[\s\]):|>-]|$)/
const lowerPrefix = /^(trace|debug|info|warn|warning|error|fatal)(?:\s*:|\s+-)\s/
const textTraceId = /\btrace[_.-]?id[=:]\s*"?([0-9a-f]{32})\b/i
const textTraceparent = /\btraceparent[=:]\s*"?([0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})/
const textCorrelation = /\bcorrelation[_.-]?id[=:]\s*"?([A-Za-z0-9._:/-]{1,256})/i

const parseTextLine = (line: string, stream: "stdout" | "stderr"): ParsedLine => {
  const start = line.length > 80 ? line.slice(0, 80) : line
  const level =
    levelNames[(logfmtLevel.exec(line)?.[1] ?? "").toLowerCase()] ??
    levelNames[(levelWord.exec(start)?.[1] ?? "").toLowerCase()] ??
    levelNames[lowerPrefix.exec(start)?.[1] ?? ""] ??
    (stream === "stderr" ? "error" : "info")
  let traceId: string | undefined
  let spanId: string | undefined
  let correlationId: string | undefined
  // Cheap pre-checks keep the regexes off the common line without ids.
  if (line.includes("race")) {
    const parent = fromTraceparent(textTraceparent.exec(line)?.[1])
    traceId = textTraceId.exec(line)?.[1]?.toLowerCase() ?? parent.traceId
    spanId = parent.spanId
  }
  if (line.includes("orrelation")) correlationId = textCorrelation.exec(line)?.[1]
  return { level, traceId, spanId, correlationId }
}

/** Level and ids of one log line (without its line terminator). */
export const parseLine = (line: string, stream: "stdout" | "stderr"): ParsedLine => {
  if (line.charCodeAt(0) === 123 /* { */ && line.endsWith("}")) {
    const parsed = parseJsonLine(line)
    if (parsed !== undefined) return parsed
  }
  return parseTextLine(line, stream)
}

/** `level` passes a minimum level filter. */
export const atLeast = (level: LogLevel, minimum: LogLevel): boolean =>
  Conventions.severityNumber[level] >= Conventions.severityNumber[minimum]

/**
 * Splits a byte stream (one per pid + fd) into lines. Writes rarely align with lines, so a partial
 * line waits for the next write; a line that grows past `maxLineBytes` is emitted cut.
 */
export class LineSplitter {
  private pending = ""
  private cutting = false

  /** Feeds one write; returns the complete lines it finished (without `\n` / `\r\n`), cut ones flagged. */
  push(bytes: Uint8Array, uncaptured: number): Array<{ line: string; cut: boolean }> {
    const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8")
    const lines: Array<{ line: string; cut: boolean }> = []
    let from = 0
    for (;;) {
      const nl = text.indexOf("\n", from)
      if (nl === -1) break
      const piece = text.slice(from, nl)
      if (!this.cutting) lines.push({ line: stripCr(this.pending + piece), cut: false })
      this.pending = ""
      this.cutting = false
      from = nl + 1
    }
    if (!this.cutting) this.pending += text.slice(from)
    if (this.pending.length > maxLineBytes) {
      lines.push({ line: this.pending.slice(0, maxLineBytes), cut: true })
      this.pending = ""
      this.cutting = true
    }
    if (uncaptured > 0 && !this.cutting) {
      // The rest of this write was not captured: the line is cut, and whatever follows is unknown
      // up to the next newline we see.
      if (this.pending.length > 0) lines.push({ line: this.pending, cut: true })
      this.pending = ""
      this.cutting = true
    }
    return lines
  }

  /** The stream ended: a trailing line without newline is complete. */
  flush(): string | undefined {
    const rest = this.pending
    this.pending = ""
    return rest.length > 0 && !this.cutting ? stripCr(rest) : undefined
  }
}

const stripCr = (line: string) => (line.endsWith("\r") ? line.slice(0, -1) : line)

export interface LogStats {
  logs: number
  belowLevel: number
}

/**
 * Lines → LogRecords: parses level and ids, applies the minimum level, and ties a line without ids
 * of its own to `serving`, the request its writer was serving (when it served exactly one).
 */
export class LogEmitter {
  readonly stats: LogStats = { logs: 0, belowLevel: 0 }
  private readonly resource: ReturnType<typeof resourceOf>
  private readonly shared: Telemetry.Attributes | undefined

  constructor(
    identity: Identity,
    private readonly minimum: LogLevel,
    private readonly sink: { log(record: Telemetry.LogRecord): void }
  ) {
    this.resource = resourceOf(identity)
    this.shared = identityAttributes(identity)
  }

  emit(
    line: string,
    cut: boolean,
    stream: "stdout" | "stderr",
    timestampNs: bigint,
    serving: () => SpanContext | undefined
  ): void {
    if (line.length === 0) return
    const parsed = parseLine(line, stream)
    if (!atLeast(parsed.level, this.minimum)) {
      this.stats.belowLevel++
      return
    }
    const context = parsed.traceId === undefined && parsed.correlationId === undefined ? serving() : undefined
    const traceId = (parsed.traceId ?? context?.traceId) as Telemetry.TraceId | undefined
    const spanId = (parsed.spanId ?? context?.spanId) as Telemetry.SpanId | undefined
    const correlationId = parsed.correlationId ?? context?.correlationId ?? parsed.traceId
    this.stats.logs++
    this.sink.log({
      timeUnixNano: timestampNs,
      ...this.resource,
      level: parsed.level,
      body: line,
      stream,
      ...(traceId === undefined ? {} : { traceId }),
      ...(spanId === undefined ? {} : { spanId }),
      ...(correlationId === undefined ? {} : { correlationId }),
      ...(cut
        ? { attributes: { ...this.shared, "iii.log_truncated": true } }
        : this.shared === undefined
          ? {}
          : { attributes: this.shared })
    })
  }
}
