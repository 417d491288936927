/** `/services/{service}`: one service's RED over time and its routes. */
import { get, type RedSeries, type RouteRed } from "../api.js"
import { TimeChart } from "../charts.js"
import { duration, isWindow, percent, rate, stepFor, type Window } from "../format.js"
import { useQuery } from "../hooks.js"
import { Link, type Location, navigate, withParams } from "../router.js"
import { Head, Loading, RedCells, ServiceName, WindowPicker } from "../ui.js"

export const Service = (props: { readonly loc: Location; readonly service: string }) => {
  const w = props.loc.params.get("window")
  const window: Window = isWindow(w) ? w : "15m"
  const service = props.service
  const path = `/v1/services/${encodeURIComponent(service)}`
  const state = useQuery(
    () =>
      Promise.all([
        get<RedSeries>(`${path}/red`, { window, step: stepFor(window) }),
        get<{ routes: ReadonlyArray<RouteRed> }>(`${path}/routes`, { window })
      ]),
    `${service}|${window}`,
    10_000
  )
  return (
    <section aria-labelledby="service-title">
      <div class="page-head">
        <h1 id="service-title">
          <ServiceName service={service} />
        </h1>
        <WindowPicker
          value={window}
          onChange={(next) => navigate(withParams(props.loc.path, { window: next }))}
        />
        <Link class="button" href={withParams("/search", { service, since: window })}>
          Search its traces
        </Link>
        <Link class="button" href={withParams("/tail", { service })}>
          Tail it live
        </Link>
      </div>
      <Loading state={state}>
        {([series, routes]) => {
          const times = series.points.map((p) => p.time)
          return (
            <>
              <div class="charts">
                <TimeChart
                  title="Requests per second"
                  times={times}
                  lines={[
                    {
                      label: "rate",
                      values: series.points.map((p) => p.rate),
                      colorVar: "--accent",
                      format: (v) => rate(v ?? 0)
                    }
                  ]}
                />
                <TimeChart
                  title="Error rate"
                  times={times}
                  lines={[
                    {
                      label: "errors",
                      values: series.points.map((p) => p.errorRate),
                      colorVar: "--bad",
                      format: (v) => percent(v ?? 0)
                    }
                  ]}
                />
                <TimeChart
                  title="Latency"
                  times={times}
                  lines={[
                    {
                      label: "p50",
                      values: series.points.map((p) => p.p50),
                      colorVar: "--accent",
                      format: duration
                    },
                    {
                      label: "p99",
                      values: series.points.map((p) => p.p99),
                      colorVar: "--warn",
                      format: duration
                    }
                  ]}
                />
              </div>
              <h2>Routes</h2>
              {routes.routes.length === 0 ? (
                <p class="muted">No request in the last {window}.</p>
              ) : (
                <table class="grid">
                  <Head
                    columns={["Route", ["Rate", "num"], ["Errors", "num"], ["p50", "num"], ["p99", "num"]]}
                  />
                  <tbody>
                    {routes.routes.map((r) => (
                      <tr>
                        <th scope="row">
                          <Link href={withParams("/search", { service, route: r.route, since: window })}>
                            {r.route}
                          </Link>
                        </th>
                        <RedCells
                          amount={rate(r.ratePerSec)}
                          errorRate={r.errorRate}
                          p50={r.p50}
                          p99={r.p99}
                        />
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </>
          )
        }}
      </Loading>
    </section>
  )
}
