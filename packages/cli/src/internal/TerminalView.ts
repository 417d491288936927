/**
 * What the terminal tools print: tables, tail lines, a waterfall. Pure functions from data to text;
 * colour (ANSI) only when asked, which the commands do when writing to a terminal.
 */
import { Format, SpanTree } from "@iii/core"

export type Paint = (style: keyof typeof styles, text: string) => string

const styles = {
  dim: "2",
  bold: "1",
  red: "31",
  green: "32",
  yellow: "33",
  blue: "34",
  magenta: "35",
  cyan: "36"
} as const

export const paint =
  (enabled: boolean): Paint =>
  (style, text) =>
    enabled ? `\u001b[${styles[style]}m${text}\u001b[0m` : text

/** Visible width of a string that may hold ANSI colour codes. */
const colourCode = new RegExp(`${"\u001b"}\\[[0-9;]*m`, "g")
const visible = (s: string) => s.replace(colourCode, "").length

const pad = (s: string, width: number, right: boolean) => {
  const gap = " ".repeat(Math.max(0, width - visible(s)))
  return right ? gap + s : s + gap
}

/** Columns sized to their widest cell; `right` columns (numbers) aligned right. */
export const table = (
  headers: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<string>>,
  right: ReadonlyArray<number> = [],
  p: Paint = paint(false)
): string => {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => visible(r[i] ?? ""))))
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((c, i) => pad(c, widths[i] ?? 0, right.includes(i)))
      .join("  ")
      .trimEnd()
  return [p("dim", line(headers)), ...rows.map(line)].join("\n")
}

export const statusStyle = (code: number | undefined): keyof typeof styles =>
  code === undefined || code === 0 || code >= 500
    ? "red"
    : code >= 400
      ? "yellow"
      : code >= 300
        ? "cyan"
        : "green"

export interface TailSpan {
  readonly traceId: string
  readonly service: string
  readonly kind: string
  readonly name: string
  readonly startTimeUnixNano: string
  readonly durationNano: number
  readonly error: boolean
  readonly http?: { readonly method: string; readonly route: string; readonly statusCode?: number }
}

/** One request: time, service, method, route, status, duration, trace id. */
export const tailLine = (s: TailSpan, p: Paint): string => {
  const status = s.http?.statusCode
  return [
    p("dim", Format.clock(s.startTimeUnixNano)),
    pad(s.service, 12, false),
    pad(`${s.http?.method ?? ""} ${s.http?.route ?? s.name}`.trim(), 28, false),
    p(statusStyle(status), pad(status === undefined ? "---" : String(status), 3, false)),
    pad(Format.duration(Format.nanosToMs(s.durationNano)), 9, true),
    p("dim", s.traceId)
  ].join("  ")
}

export interface Red {
  readonly name: string
  readonly ratePerSec: number
  readonly errorRate: number
  readonly p50: number | null
  readonly p99: number | null
}

/** Services (or routes) by rate, with error rate and latency. */
export const redTable = (what: string, rows: ReadonlyArray<Red>, p: Paint): string =>
  rows.length === 0
    ? p("dim", `no ${what.toLowerCase()} with traffic in this window`)
    : table(
        [what, "RATE", "ERRORS", "P50", "P99"],
        [...rows]
          .sort((a, b) => b.ratePerSec - a.ratePerSec || a.name.localeCompare(b.name))
          .map((r) => [
            r.name,
            Format.rate(r.ratePerSec),
            r.errorRate > 0.05 ? p("red", Format.percent(r.errorRate)) : Format.percent(r.errorRate),
            Format.duration(r.p50),
            Format.duration(r.p99)
          ]),
        [1, 2, 3, 4],
        p
      )

export interface WaterfallSpan extends TailSpan {
  readonly spanId: string
  readonly parentSpanId?: string
}

/** A waterfall `columns` wide: each span's name, status and duration, and a bar where it ran. */
export const waterfall = (spans: ReadonlyArray<WaterfallSpan>, columns: number, p: Paint): string => {
  if (spans.length === 0) return ""
  const { start, end } = SpanTree.extent(spans)
  const total = Math.max(1, Number(end - start))
  // "~": its parent was not captured; placed under the call that encloses it in time.
  const rows = SpanTree.order(spans).map(({ span, depth, inferred }) => ({
    label: `${"  ".repeat(depth)}${inferred ? "~" : ""}${span.service} ${span.kind} ${span.name}`,
    span
  }))
  const labelWidth = Math.min(60, Math.max(...rows.map((r) => r.label.length)))
  const barWidth = Math.max(10, columns - labelWidth - 20)
  return rows
    .map(({ label, span }) => {
      const from = Math.floor((Number(BigInt(span.startTimeUnixNano) - start) / total) * barWidth)
      const length = Math.max(1, Math.round((span.durationNano / total) * barWidth))
      const bar = " ".repeat(from) + "█".repeat(Math.min(length, barWidth - from))
      const status = span.http?.statusCode
      const style = span.error ? "red" : "blue"
      return [
        pad(label.length > labelWidth ? `${label.slice(0, labelWidth - 1)}…` : label, labelWidth, false),
        p(statusStyle(status), pad(status === undefined ? "---" : String(status), 3, false)),
        pad(Format.duration(Format.nanosToMs(span.durationNano)), 9, true),
        ` ${p(style, pad(bar, barWidth, false))}`
      ].join(" ")
    })
    .join("\n")
}
