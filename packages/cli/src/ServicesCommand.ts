/** `iii services`: RED per service (rate, errors, p50, p99) over a window. */
import { Command, Options } from "@effect/cli"
import { Console, Effect } from "effect"
import { obsOption, target, tokenFileOption } from "./internal/ObsClient.js"
import * as RedQueries from "./internal/RedQueries.js"
import { paint, redTable } from "./internal/TerminalView.js"

const window = Options.text("window").pipe(
  Options.withDefault("5m"),
  Options.withDescription("how far back the figures reach (30s, 5m, 1h…)")
)

export const command = Command.make(
  "services",
  { obs: obsOption, tokenFile: tokenFileOption, window },
  (flags) =>
    Effect.gen(function* () {
      const t = yield* target(flags.obs, flags.tokenFile)
      const seconds = yield* RedQueries.windowSeconds(flags.window)
      const rows = yield* RedQueries.services(t, seconds)
      yield* Console.log(redTable("SERVICE", rows, paint(process.stdout.isTTY === true)))
    })
).pipe(Command.withDescription("Requests per second, error rate, p50 and p99 of every service"))
