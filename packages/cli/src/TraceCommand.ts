/** `iii trace ID`: a trace's waterfall in the terminal, and its logs. */
import { Args, Command } from "@effect/cli"
import { Console, Effect } from "effect"
import { getJson, ObsError, obsOption, target, tokenFileOption } from "./internal/ObsClient.js"
import { paint, type WaterfallSpan } from "./internal/TerminalView.js"
import { type LogLine, logBlock, traceBlock } from "./internal/TraceView.js"

const id = Args.text({ name: "ID" }).pipe(Args.withDescription("trace id: 32 hex characters"))

interface Span extends WaterfallSpan {
  readonly correlationId: string
}

export const command = Command.make("trace", { id, obs: obsOption, tokenFile: tokenFileOption }, (flags) =>
  Effect.gen(function* () {
    const traceId = flags.id.trim().toLowerCase()
    if (!/^[0-9a-f]{32}$/.test(traceId))
      return yield* new ObsError({
        message: `"${flags.id}" is not a trace id (32 hex characters); for a correlation id, use iii correlate`
      })
    const t = yield* target(flags.obs, flags.tokenFile)
    const { spans } = yield* getJson<{ spans: ReadonlyArray<Span> }>(t, `/v1/traces/${traceId}`)
    // Its logs: those of its correlation ids that name this trace, or no trace.
    const correlations = Array.from(new Set(spans.map((s) => s.correlationId)))
    const answers = yield* Effect.forEach(correlations, (c) =>
      getJson<{ logs: ReadonlyArray<LogLine> }>(t, `/v1/correlate/${encodeURIComponent(c)}`).pipe(
        Effect.orElseSucceed(() => ({ logs: [] as ReadonlyArray<LogLine> }))
      )
    )
    const logs = answers
      .flatMap((a) => a.logs)
      .filter((l) => l.traceId === undefined || l.traceId === traceId)
    const p = paint(process.stdout.isTTY === true)
    yield* Console.log(`${traceBlock(traceId, spans, p)}\n\n${p("bold", "logs")}\n${logBlock(logs, p)}`)
  })
).pipe(Command.withDescription("A trace's waterfall and its logs, in the terminal"))
