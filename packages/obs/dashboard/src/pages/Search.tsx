/**
 * `/search?service=…&route=…&status=…&minDuration=…&since=…&until=…&correlationId=…`: trace search.
 * The filters live in the address, so a search can be shared and survives a reload.
 */
import { useEffect, useState } from "preact/hooks"
import * as SpanTree from "../../../../core/src/SpanTree.js"
import { type Correlation, get, type ServiceInfo, type TracePage, type TraceSummary } from "../api.js"
import { clock, duration, nanosToMs } from "../format.js"
import { useQuery } from "../hooks.js"
import { Link, type Location, navigate, withParams } from "../router.js"
import { Head, Loading, ServiceName, TextField } from "../ui.js"

export const filterNames = [
  "service",
  "route",
  "status",
  "minDuration",
  "since",
  "until",
  "correlationId"
] as const
type Filters = Partial<Record<(typeof filterNames)[number], string>>

const filtersOf = (params: URLSearchParams): Filters =>
  Object.fromEntries(filterNames.flatMap((n) => (params.get(n) ? [[n, params.get(n) ?? ""]] : [])))

/** Summaries of a correlation id's traces, in the shape of a search answer. */
const correlated = async (id: string): Promise<TracePage> => {
  const c = await get<Correlation>(`/v1/correlate/${encodeURIComponent(id)}`)
  return {
    traces: c.traces.map((t) => {
      const first = t.spans[0]
      const { start, end } = SpanTree.extent(t.spans)
      const root = t.spans.find((s) => s.parentSpanId === undefined || s.parentMissing === true) ?? first
      return {
        traceId: t.traceId,
        correlationId: id,
        rootService: root?.service ?? "",
        rootName: root?.name ?? "",
        startTimeUnixNano: start.toString(),
        durationNano: Number(end - start),
        spanCount: t.spans.length,
        errorCount: t.spans.filter((s) => s.error).length,
        services: Array.from(new Set(t.spans.map((s) => s.service))).sort()
      }
    })
  }
}

const statuses = [
  ["5xx", "5xx"],
  ["4xx", "4xx"],
  ["2xx", "2xx"],
  ["3xx", "3xx"],
  ["error", "error"],
  ["none", "no response"]
] as const

/** The services to offer: those the node knows, and the one in the address even if it does not. */
const serviceNames = (known: ReadonlyArray<ServiceInfo> | undefined, current: string | undefined) => {
  const names = new Set((known ?? []).map((s) => s.service))
  if (current !== undefined) names.add(current)
  return Array.from(names).sort()
}

export const Search = (props: { readonly loc: Location }) => {
  const filters = filtersOf(props.loc.params)
  const key = JSON.stringify(filters)
  const services = useQuery(() => get<{ services: ReadonlyArray<ServiceInfo> }>("/v1/services"), "services")
  const [more, setMore] = useState<{ traces: ReadonlyArray<TraceSummary>; cursor?: string }>({ traces: [] })
  useEffect(() => setMore({ traces: [] }), [key])
  const { correlationId, ...query } = filters
  const state = useQuery(
    () =>
      correlationId !== undefined
        ? correlated(correlationId)
        : get<TracePage>("/v1/traces", { ...query, since: query.since ?? "1h", limit: "50" }),
    key
  )
  const submit = (e: Event) => {
    e.preventDefault()
    const data = new FormData(e.target as HTMLFormElement)
    const next: Record<string, string> = {}
    for (const n of filterNames) {
      const v = String(data.get(n) ?? "").trim()
      if (v !== "") next[n] = v
    }
    navigate(withParams("/search", next))
  }
  const loadMore = async (cursor: string) => {
    const page = await get<TracePage>("/v1/traces", {
      ...query,
      since: query.since ?? "1h",
      limit: "50",
      cursor
    })
    setMore((m) => ({
      traces: [...m.traces, ...page.traces],
      ...(page.nextCursor !== undefined && { cursor: page.nextCursor })
    }))
  }
  return (
    <section aria-labelledby="search-title">
      <h1 id="search-title">Traces</h1>
      <form class="filters" onSubmit={submit} aria-label="Trace search filters" key={key}>
        <div class="field">
          <label for="search-service">Service</label>
          <select id="search-service" name="service">
            <option value="">any</option>
            {serviceNames(services.data?.services, filters.service).map((s) => (
              <option value={s} selected={s === filters.service}>
                {s}
              </option>
            ))}
          </select>
        </div>
        <TextField id="search-route" label="Route" name="route" value={filters.route} hint="/products/{id}" />
        <div class="field">
          <label for="search-status">Status</label>
          <select id="search-status" name="status">
            <option value="">any</option>
            {statuses.map(([value, label]) => (
              <option value={value} selected={value === filters.status}>
                {label}
              </option>
            ))}
          </select>
        </div>
        <TextField
          id="search-minduration"
          label="Min duration"
          name="minDuration"
          value={filters.minDuration}
          hint="200ms"
        />
        <TextField id="search-since" label="Since" name="since" value={filters.since} hint="1h" />
        <TextField id="search-until" label="Until" name="until" value={filters.until} hint="now" />
        <TextField
          id="search-correlationid"
          label="Correlation id"
          name="correlationId"
          value={filters.correlationId}
          hint="order-1234"
        />
        <button type="submit">Search</button>
      </form>
      <Loading state={state}>
        {(page) => {
          const traces = [...page.traces, ...more.traces]
          const cursor = more.traces.length > 0 ? more.cursor : page.nextCursor
          if (traces.length === 0) return <p class="muted">No trace matches.</p>
          const longest = Math.max(...traces.map((t) => t.durationNano))
          return (
            <>
              <table class="grid" aria-label="Matching traces">
                <Head
                  columns={[
                    "Start",
                    "Root",
                    "Services",
                    ["Spans", "num"],
                    ["Duration", "num"],
                    ["Duration bar", "hidden"]
                  ]}
                />
                <tbody>
                  {traces.map((t) => (
                    <tr class={t.errorCount > 0 ? "has-errors" : ""}>
                      <td class="mono">{clock(t.startTimeUnixNano)}</td>
                      <th scope="row">
                        <Link href={`/traces/${t.traceId}`}>
                          <ServiceName service={t.rootService} /> {t.rootName}
                        </Link>
                        {t.errorCount > 0 && (
                          <span class="badge bad">
                            {t.errorCount} error{t.errorCount === 1 ? "" : "s"}
                          </span>
                        )}
                      </th>
                      <td>{t.services.join(", ")}</td>
                      <td class="num">{t.spanCount}</td>
                      <td class="num">{duration(nanosToMs(t.durationNano))}</td>
                      <td>
                        <span
                          class="bar"
                          style={{ width: `${Math.max(2, (t.durationNano / longest) * 100)}%` }}
                          aria-hidden="true"
                        />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
              {cursor !== undefined && correlationId === undefined && (
                <button type="button" onClick={() => loadMore(cursor)}>
                  More
                </button>
              )}
            </>
          )
        }}
      </Loading>
    </section>
  )
}
