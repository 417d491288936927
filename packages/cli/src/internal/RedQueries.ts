/** RED figures the terminal tools show: per service, or per route of one service, over a window. */
import { Effect } from "effect"
import { getJson, ObsError, type Target } from "./ObsClient.js"
import type { Red } from "./TerminalView.js"

const units: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 }

/** `30s`, `5m`, `1h` → seconds (10 s to 7 days, whole multiples of 10 s, as the RED API wants). */
export const windowSeconds = (text: string) => {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim())
  const seconds = m === null ? Number.NaN : Number(m[1]) * (units[m[2] ?? ""] ?? Number.NaN)
  return Number.isFinite(seconds) && seconds >= 10 && seconds <= 7 * 86_400 && seconds % 10 === 0
    ? Effect.succeed(seconds)
    : Effect.fail(
        new ObsError({ message: `--window: "${text}" is not a window such as 30s, 1m, 5m or 1h (10s to 7d)` })
      )
}

interface RedAnswer {
  readonly points: ReadonlyArray<{ requests: number; errors: number; p50: number | null; p99: number | null }>
}

/** Every service's figures over the last `seconds`. */
export const services = (t: Target, seconds: number) =>
  Effect.gen(function* () {
    const list = yield* getJson<{ services: ReadonlyArray<{ service: string }> }>(t, "/v1/services")
    return yield* Effect.forEach(
      list.services,
      (s) =>
        Effect.map(
          getJson<RedAnswer>(t, `/v1/services/${encodeURIComponent(s.service)}/red`, {
            window: `${seconds}s`,
            step: `${seconds}s`
          }),
          (red): Red => {
            const requests = red.points.reduce((n, p) => n + p.requests, 0)
            const errors = red.points.reduce((n, p) => n + p.errors, 0)
            const last = red.points[red.points.length - 1]
            return {
              name: s.service,
              ratePerSec: requests / seconds,
              errorRate: requests === 0 ? 0 : errors / requests,
              p50: last?.p50 ?? null,
              p99: last?.p99 ?? null
            }
          }
        ),
      { concurrency: 8 }
    )
  })

/** The routes one service served lately, each with its figures over the last `seconds`. */
export const routes = (t: Target, service: string, seconds: number) =>
  Effect.map(
    getJson<{
      routes: ReadonlyArray<{
        route: string
        ratePerSec: number
        errorRate: number
        p50: number | null
        p99: number | null
      }>
    }>(t, `/v1/services/${encodeURIComponent(service)}/routes`, { window: `${seconds}s` }),
    (answer): ReadonlyArray<Red> => answer.routes.map((r) => ({ name: r.route, ...r }))
  )
