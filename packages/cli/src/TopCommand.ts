/**
 * `iii top`: services (or, with --service, that service's routes) by request rate, with error rate,
 * p50 and p99, redrawn every --interval. On a terminal it takes the screen, as top does, and gives
 * it back on Ctrl-C; piped, it prints one table per interval.
 */
import { Command, Options } from "@effect/cli"
import { Effect, Option, Schedule } from "effect"
import { obsOption, target, tokenFileOption } from "./internal/ObsClient.js"
import * as RedQueries from "./internal/RedQueries.js"
import { paint, redTable } from "./internal/TerminalView.js"

const service = Options.text("service").pipe(
  Options.optional,
  Options.withDescription("show this service's routes instead of the services")
)
const window = Options.text("window").pipe(
  Options.withDefault("1m"),
  Options.withDescription("how far back the figures reach (30s, 1m, 5m…)")
)
const interval = Options.integer("interval").pipe(
  Options.withDefault(2),
  Options.withDescription("seconds between refreshes")
)

const write = (text: string) => Effect.sync(() => process.stdout.write(text))

export const command = Command.make(
  "top",
  { obs: obsOption, tokenFile: tokenFileOption, service, window, interval },
  (flags) =>
    Effect.gen(function* () {
      const t = yield* target(flags.obs, flags.tokenFile)
      const seconds = yield* RedQueries.windowSeconds(flags.window)
      const tty = process.stdout.isTTY === true
      const p = paint(tty)
      const what = Option.match(flags.service, {
        onNone: () => "services",
        onSome: (s) => `routes of ${s}`
      })
      const frame = Effect.gen(function* () {
        const rows = yield* Option.match(flags.service, {
          onNone: () => RedQueries.services(t, seconds),
          onSome: (s) => RedQueries.routes(t, s, seconds)
        })
        const header = `${p("bold", "iii top")}  ${t.url}  ${what} over the last ${flags.window}  ${new Date().toLocaleTimeString()}${tty ? p("dim", "  (Ctrl-C quits)") : ""}`
        const body = redTable(Option.isNone(flags.service) ? "SERVICE" : "ROUTE", rows, p)
        // On a terminal: home, clear, draw. Piped: one table after another.
        yield* write(tty ? `\u001b[H\u001b[2J${header}\n\n${body}\n` : `${header}\n${body}\n\n`)
      })
      if (tty)
        yield* Effect.acquireRelease(write("\u001b[?1049h\u001b[?25l"), () =>
          write("\u001b[?25h\u001b[?1049l")
        )
      yield* frame.pipe(Effect.repeat(Schedule.spaced(`${Math.max(1, flags.interval)} seconds`)))
    }).pipe(Effect.scoped)
).pipe(
  Command.withDescription(
    "A refreshing table of services (or one service's routes) by rate, errors, p50, p99"
  )
)
