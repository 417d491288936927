/**
 * `iii tail`: requests as they are stored, one line each (time, service, method, route, status,
 * duration, trace id), coloured by status on a terminal, plain when piped; `-o json` prints each span
 * as a JSON line. The filters are /v1/tail's.
 */
import { Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { ObsError, obsOption, openTail, target, tokenFileOption } from "./internal/ObsClient.js"
import { paint, type TailSpan, tailLine } from "./internal/TerminalView.js"

const text = (name: string, description: string) =>
  Options.text(name).pipe(Options.optional, Options.withDescription(description))

const service = text("service", "only this service")
const route = text("route", "only this route, e.g. /orders/{id}")
const status = text("status", "only this status class: 1xx … 5xx, error, none")
const minDuration = text("min-duration", "only requests at least this slow, e.g. 200ms")
const output = Options.choice("output", ["text", "json"]).pipe(
  Options.withAlias("o"),
  Options.withDefault("text" as const),
  Options.withDescription("text (one line per request) or json (one span per line)")
)

export const command = Command.make(
  "tail",
  { obs: obsOption, tokenFile: tokenFileOption, service, route, status, minDuration, output },
  (flags) =>
    Effect.gen(function* () {
      const t = yield* target(flags.obs, flags.tokenFile)
      const ws = yield* Effect.acquireRelease(
        openTail(t, {
          service: Option.getOrUndefined(flags.service),
          route: Option.getOrUndefined(flags.route),
          status: Option.getOrUndefined(flags.status),
          minDuration: Option.getOrUndefined(flags.minDuration)
        }),
        (ws) => Effect.sync(() => ws.close())
      )
      const p = paint(process.stdout.isTTY === true)
      yield* Effect.async<never, ObsError>((resume) => {
        ws.onMessage((text) => {
          const message = JSON.parse(text) as {
            type: string
            spans?: ReadonlyArray<TailSpan>
            dropped?: number
          }
          if (message.type === "dropped")
            process.stderr.write(
              `${p("yellow", `… ${message.dropped} requests dropped: this terminal fell behind`)}\n`
            )
          for (const s of message.spans ?? [])
            process.stdout.write(`${flags.output === "json" ? JSON.stringify(s) : tailLine(s, p)}\n`)
        })
        ws.onClose((code, reason) =>
          resume(
            Effect.fail(
              new ObsError({
                message: `obs at ${t.url} closed the tail (${code}${reason.length > 0 ? `: ${reason}` : ""})`
              })
            )
          )
        )
      })
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Requests as they happen, one line each (like linkerd tap or hubble observe)"))
