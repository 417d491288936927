/**
 * `/search?service=…&route=…&status=…&minDuration=…&since=…&until=…&correlationId=…`: trace search.
 * The filters live in the address, so a search can be shared and survives a reload.
 */
import { useEffect, useState } from "preact/hooks"
import { type Correlation, get, type ServiceInfo, type TracePage, type TraceSummary } from "../api.js"
import { clock, duration, nanosToMs } from "../format.js"
import { useQuery } from "../hooks.js"
import { Link, type Location, navigate, withParams } from "../router.js"
import { Loading, ServiceName } from "../ui.js"

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
      const start = t.spans.reduce(
        (m, s) => (BigInt(s.startTimeUnixNano) < m ? BigInt(s.startTimeUnixNano) : m),
        BigInt(first?.startTimeUnixNano ?? 0)
      )
      const end = t.spans.reduce((m, s) => {
        const e = BigInt(s.startTimeUnixNano) + BigInt(s.durationNano)
        return e > m ? e : m
      }, 0n)
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

const field = (label: string, name: string, value: string | undefined, hint: string) => (
  <div class="field">
    <label for={`search-${label}`.toLowerCase().replaceAll(" ", "-")}>{label}</label>
    <input
      id={`search-${label}`.toLowerCase().replaceAll(" ", "-")}
      name={name}
      defaultValue={value ?? ""}
      placeholder={hint}
      autocomplete="off"
    />
  </div>
)

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
        {field("Route", "route", filters.route, "/products/{id}")}
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
        {field("Min duration", "minDuration", filters.minDuration, "200ms")}
        {field("Since", "since", filters.since, "1h")}
        {field("Until", "until", filters.until, "now")}
        {field("Correlation id", "correlationId", filters.correlationId, "order-1234")}
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
                <thead>
                  <tr>
                    <th scope="col">Start</th>
                    <th scope="col">Root</th>
                    <th scope="col">Services</th>
                    <th scope="col" class="num">
                      Spans
                    </th>
                    <th scope="col" class="num">
                      Duration
                    </th>
                    <th scope="col">
                      <span class="sr-only">Duration bar</span>
                    </th>
                  </tr>
                </thead>
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
