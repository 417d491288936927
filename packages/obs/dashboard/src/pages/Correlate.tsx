/** `/correlate/{id}`: the traces, logs and RED of one correlation id (or trace id). */
import { type Correlation, get } from "../api.js"
import { clock, duration, nanosToMs } from "../format.js"
import { useQuery } from "../hooks.js"
import { Link } from "../router.js"
import { Head, Loading, RedCells, ServiceName } from "../ui.js"
import { LogTable } from "./Trace.js"

export const Correlate = (props: { readonly id: string }) => {
  const state = useQuery(() => get<Correlation>(`/v1/correlate/${encodeURIComponent(props.id)}`), props.id)
  return (
    <section aria-labelledby="correlate-title">
      <h1 id="correlate-title">
        Correlation id <span class="mono">{props.id}</span>
      </h1>
      <Loading state={state}>
        {(c) => (
          <>
            <h2>Traces</h2>
            {c.traces.length === 0 ? (
              <p class="muted">No trace.</p>
            ) : (
              <ul class="trace-list">
                {c.traces.map((t) => {
                  const root =
                    t.spans.find((s) => s.parentSpanId === undefined || s.parentMissing === true) ??
                    t.spans[0]
                  const errors = t.spans.filter((s) => s.error).length
                  return (
                    <li>
                      <Link href={`/traces/${t.traceId}`}>
                        {root !== undefined && <ServiceName service={root.service} />} {root?.name}
                      </Link>{" "}
                      <span class="muted">
                        {root !== undefined && clock(root.startTimeUnixNano)} · {t.spans.length} spans ·{" "}
                        {root !== undefined && duration(nanosToMs(root.durationNano))}
                      </span>
                      {errors > 0 && <span class="badge bad">{errors} errors</span>}
                    </li>
                  )
                })}
              </ul>
            )}
            <h2>Logs</h2>
            <LogTable logs={c.logs} label={`Logs with correlation id ${props.id}`} />
            <h2>RED around these requests</h2>
            {c.red.length === 0 ? (
              <p class="muted">No server span, so no RED figures.</p>
            ) : (
              <table class="grid" aria-label="Requests, errors and latency of the routes involved">
                <Head
                  columns={[
                    "Service",
                    "Route",
                    ["Requests", "num"],
                    ["Errors", "num"],
                    ["p50", "num"],
                    ["p99", "num"]
                  ]}
                />
                <tbody>
                  {c.red.map((r) => (
                    <tr>
                      <td>
                        <ServiceName service={r.service} />
                      </td>
                      <td>{r.route}</td>
                      <RedCells amount={String(r.requests)} errorRate={r.errorRate} p50={r.p50} p99={r.p99} />
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </>
        )}
      </Loading>
    </section>
  )
}
