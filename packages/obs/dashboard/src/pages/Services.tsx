/** `/` and `/services`: every service with its rate, errors, p50/p99 and sparklines over a window. */
import { get, type RedSeries, type ServiceInfo } from "../api.js"
import { Sparkline } from "../charts.js"
import { duration, isWindow, percent, rate, secondsOf, stepFor, type Window } from "../format.js"
import { useQuery } from "../hooks.js"
import { Link, type Location, navigate, withParams } from "../router.js"
import { Head, Loading, ServiceName, WindowPicker } from "../ui.js"

export interface ServiceRow {
  readonly service: string
  readonly requests: number
  readonly rate: number
  readonly errorRate: number
  readonly p50: number | null
  readonly p99: number | null
  readonly rates: ReadonlyArray<number>
  readonly p99s: ReadonlyArray<number | null>
}

/** One service's figures over the window (a single step for the totals) and its series for the sparklines. */
export const loadService = async (service: string, window: Window): Promise<ServiceRow> => {
  const path = `/v1/services/${encodeURIComponent(service)}/red`
  const [total, series] = await Promise.all([
    get<RedSeries>(path, { window, step: `${secondsOf(window)}s` }),
    get<RedSeries>(path, { window, step: stepFor(window) })
  ])
  const sum = total.points.reduce(
    (acc, p) => ({
      requests: acc.requests + p.requests,
      errors: acc.errors + p.errors,
      p50: p.p50,
      p99: p.p99
    }),
    { requests: 0, errors: 0, p50: null as number | null, p99: null as number | null }
  )
  // Per second of the time the service was seen in the window: a service that started a minute
  // ago shows its rate, not a fifteenth of it.
  const firstSeen = series.points.find((p) => p.requests > 0)?.time
  const nowSec = Date.now() / 1000
  const seconds =
    firstSeen === undefined
      ? secondsOf(window)
      : Math.max(10, Math.min(secondsOf(window), nowSec - firstSeen))
  return {
    service,
    requests: sum.requests,
    rate: sum.requests / seconds,
    errorRate: sum.requests === 0 ? 0 : sum.errors / sum.requests,
    p50: sum.p50,
    p99: sum.p99,
    rates: series.points.map((p) => p.rate),
    p99s: series.points.map((p) => p.p99)
  }
}

export const Services = (props: { readonly loc: Location }) => {
  const w = props.loc.params.get("window")
  const window: Window = isWindow(w) ? w : "15m"
  const state = useQuery(
    async () => {
      const { services } = await get<{ services: ReadonlyArray<ServiceInfo> }>("/v1/services")
      return Promise.all(services.map((s) => loadService(s.service, window)))
    },
    window,
    10_000
  )
  return (
    <section aria-labelledby="services-title">
      <div class="page-head">
        <h1 id="services-title">Services</h1>
        <WindowPicker
          value={window}
          onChange={(next) => navigate(withParams("/services", { window: next }))}
        />
      </div>
      <Loading state={state}>
        {(rows) =>
          rows.length === 0 ? (
            <p class="muted">
              No service has sent telemetry yet. Traffic shows here within seconds of reaching a traced app.
            </p>
          ) : (
            <table class="grid">
              <caption class="sr-only">
                Requests, errors and latency of each service over the last {window}
              </caption>
              <Head
                columns={[
                  "Service",
                  ["Rate", "num"],
                  "Rate over time",
                  ["Errors", "num"],
                  ["p50", "num"],
                  ["p99", "num"],
                  "p99 over time",
                  ["Traces", "hidden"]
                ]}
              />
              <tbody>
                {rows.map((r) => (
                  <tr data-service={r.service}>
                    <th scope="row">
                      <Link href={withParams(`/services/${encodeURIComponent(r.service)}`, { window })}>
                        <ServiceName service={r.service} />
                      </Link>
                    </th>
                    <td class="num" data-label="rate">
                      {rate(r.rate)}
                    </td>
                    <td>
                      <Sparkline
                        values={r.rates}
                        label={`${r.service} requests per second over the last ${window}`}
                      />
                    </td>
                    <td class={`num ${r.errorRate > 0.05 ? "bad" : ""}`} data-label="errors">
                      {percent(r.errorRate)}
                    </td>
                    <td class="num">{duration(r.p50)}</td>
                    <td class="num">{duration(r.p99)}</td>
                    <td>
                      <Sparkline
                        values={r.p99s}
                        label={`${r.service} p99 latency over the last ${window}`}
                        colorVar="--warn"
                      />
                    </td>
                    <td>
                      <Link href={withParams("/search", { service: r.service, since: window })}>traces</Link>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loading>
    </section>
  )
}
