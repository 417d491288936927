/** `iii trace` and `iii correlate` print traces and logs the same way. */
import { Format, SpanTree } from "@iii/core"
import { type Paint, table, type WaterfallSpan, waterfall } from "./TerminalView.js"

export interface LogLine {
  readonly timeUnixNano: string
  readonly service: string
  readonly level: string
  readonly body: string
  readonly traceId?: string
}

export const columns = () => process.stdout.columns ?? 120

/** A trace's heading line and its waterfall. */
export const traceBlock = (traceId: string, spans: ReadonlyArray<WaterfallSpan>, p: Paint): string => {
  const services = Array.from(new Set(spans.map((s) => s.service)))
  const { start, end } = SpanTree.extent(spans)
  const heading = `${p("bold", `trace ${traceId}`)}  ${spans.length} spans, ${services.length} service${services.length === 1 ? "" : "s"} (${services.join(", ")}), ${Format.duration(Number(end - start) / 1e6)}, at ${Format.dateTime(start)}`
  return `${heading}\n${waterfall(spans, columns(), p)}`
}

const levelStyle = (level: string) =>
  level === "error" || level === "fatal" ? "red" : level === "warn" ? "yellow" : "dim"

export const logBlock = (logs: ReadonlyArray<LogLine>, p: Paint): string =>
  logs.length === 0
    ? p("dim", "no log lines")
    : table(
        ["TIME", "SERVICE", "LEVEL", "MESSAGE"],
        logs.map((l) => [
          Format.clock(l.timeUnixNano),
          l.service,
          p(levelStyle(l.level), l.level),
          Format.logText(l.body)
        ]),
        [],
        p
      )
