/** `iii correlate ID`: every trace, log line and RED figure of one correlation id (or trace id). */
import { Args, Command } from "@effect/cli"
import { Format } from "@iii/core"
import { Console, Effect } from "effect"
import { getJson, obsOption, target, tokenFileOption } from "./internal/ObsClient.js"
import { paint, table, type WaterfallSpan } from "./internal/TerminalView.js"
import { type LogLine, logBlock, traceBlock } from "./internal/TraceView.js"

const id = Args.text({ name: "ID" }).pipe(
  Args.withDescription("correlation id (x-iii-correlation-id) or trace id")
)

interface Answer {
  readonly traces: ReadonlyArray<{ readonly traceId: string; readonly spans: ReadonlyArray<WaterfallSpan> }>
  readonly logs: ReadonlyArray<LogLine>
  readonly red: ReadonlyArray<{
    readonly service: string
    readonly route: string
    readonly requests: number
    readonly errorRate: number
    readonly p50: number | null
    readonly p99: number | null
  }>
}

export const command = Command.make(
  "correlate",
  { id, obs: obsOption, tokenFile: tokenFileOption },
  (flags) =>
    Effect.gen(function* () {
      const t = yield* target(flags.obs, flags.tokenFile)
      const c = yield* getJson<Answer>(t, `/v1/correlate/${encodeURIComponent(flags.id)}`)
      const p = paint(process.stdout.isTTY === true)
      const red = table(
        ["SERVICE", "ROUTE", "REQUESTS", "ERRORS", "P50", "P99"],
        c.red.map((r) => [
          r.service,
          r.route,
          String(r.requests),
          Format.percent(r.errorRate),
          Format.duration(r.p50),
          Format.duration(r.p99)
        ]),
        [2, 3, 4, 5],
        p
      )
      yield* Console.log(
        [
          ...c.traces.map((tr) => traceBlock(tr.traceId, tr.spans, p)),
          `${p("bold", "logs")}\n${logBlock(c.logs, p)}`,
          `${p("bold", "RED of those routes, around these requests")}\n${c.red.length === 0 ? p("dim", "no server span") : red}`
        ].join("\n\n")
      )
    })
).pipe(Command.withDescription("The traces, logs and RED of one correlation id"))
