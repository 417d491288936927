// Fuzz target: obs's query-parameter parsers and the API's routing, on any URL a client can send.
// Parsers return Either and never throw; what they accept stays within the documented bounds; every
// request is answered 200, 400 or 404 over a store that finds nothing.
import { Effect, Either } from "effect"
import { route } from "../packages/obs/dist/internal/node/HttpApi.js"
import * as Params from "../packages/obs/dist/internal/node/Params.js"

const now = 1_800_000_000_000n * 1_000_000n
const empty = Effect.succeed([])
const reader = {
  trace: () => empty,
  searchTraces: () => Effect.succeed({ traces: [] }),
  correlatedTraceIds: () => empty,
  logs: () => empty,
  red: () => empty,
  services: () => empty
}

const check = (ok, what) => {
  if (!ok) throw new Error(what)
}

export function fuzz(data) {
  const text = data.toString("utf8")
  const params = new URLSearchParams(text)
  const traces = Params.parseTraceQuery(params, now)
  if (Either.isRight(traces)) check(traces.right.limit >= 1 && traces.right.limit <= Params.maxLimit, "limit")
  const red = Params.parseRedQuery(params)
  if (Either.isRight(red)) {
    const { windowSec, stepSec } = red.right
    check(
      stepSec >= 10 && stepSec % 10 === 0 && stepSec <= windowSec && windowSec <= 7 * 86_400,
      "red bounds"
    )
    check(windowSec / stepSec <= 1000, "red points")
  }
  Params.parseTailFilter(params)
  Params.parseTimeNano("t", text, now)
  const duration = Params.parseDurationNano("d", text)
  if (Either.isRight(duration)) check(Number.isFinite(duration.right) && duration.right >= 0, "duration")
  const id = Params.parseCorrelationId(text)
  if (Either.isRight(id)) check(id.right.length <= Params.maxCorrelationIdLength, "correlation id")
  let url
  try {
    url = new URL(`http://node/${text}`)
  } catch {
    return
  }
  const answer = route(reader, url, 1_800_000_000_000)
  if (answer === undefined) return
  const status = Effect.runSync(
    Effect.catchAll(answer, (e) => Effect.succeed({ status: e._tag === "InvalidParameter" ? 400 : 500 }))
  ).status
  check(status === 200 || status === 400 || status === 404, `answered ${status}`)
}
