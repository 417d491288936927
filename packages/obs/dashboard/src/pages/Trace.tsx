/** `/traces/{traceId}`: the waterfall, the selected span's details, and the trace's logs. */
import { useState } from "preact/hooks"
import * as Format from "../../../../core/src/Format.js"
import * as SpanTree from "../../../../core/src/SpanTree.js"
import { type Correlation, get, type LogRecord, type Span } from "../api.js"
import { clock, dateTime, duration, nanosToMs } from "../format.js"
import { useQuery } from "../hooks.js"
import { Link, withParams } from "../router.js"
import { Head, HttpStatus, Loading, ServiceName, serviceColor } from "../ui.js"

interface Loaded {
  readonly spans: ReadonlyArray<Span>
  readonly logs: ReadonlyArray<LogRecord>
}

/** The trace, and its logs: those naming the trace, and those of its correlation id naming no trace. */
const load = async (traceId: string): Promise<Loaded> => {
  const { spans } = await get<{ spans: ReadonlyArray<Span> }>(`/v1/traces/${traceId}`)
  const ids = Array.from(new Set(spans.map((s) => s.correlationId)))
  const answers = await Promise.all(
    ids.map((id) => get<Correlation>(`/v1/correlate/${encodeURIComponent(id)}`).catch(() => undefined))
  )
  const seen = new Set<string>()
  const logs = answers
    .flatMap((a) => a?.logs ?? [])
    .filter((l) => l.traceId === traceId || l.traceId === undefined)
    .filter((l) => {
      const key = `${l.timeUnixNano}|${l.service}|${l.body}`
      return !seen.has(key) && seen.add(key) !== undefined
    })
    .sort((a, b) => (BigInt(a.timeUnixNano) < BigInt(b.timeUnixNano) ? -1 : 1))
  return { spans, logs }
}

const Detail = (props: { readonly span: Span }) => {
  const s = props.span
  const rows: Array<[string, string | undefined]> = [
    ["service", s.service],
    ["kind", s.kind],
    ["method", s.http?.method],
    ["route", s.http?.route],
    ["path", s.http?.path],
    ["status", s.http?.statusCode === undefined ? "no response" : String(s.http.statusCode)],
    ["error", s.error ? "yes" : "no"],
    ["duration", duration(nanosToMs(s.durationNano))],
    ["start", `${dateTime(s.startTimeUnixNano)} (${clock(s.startTimeUnixNano)})`],
    ["span id", s.spanId],
    [
      "parent",
      s.parentSpanId === undefined
        ? "none (root)"
        : `${s.parentSpanId}${s.parentMissing === true ? " (not captured)" : ""}`
    ],
    ["correlation id", s.correlationId],
    ["pod", s.pod],
    ["peer", s.peerAddress === undefined ? undefined : `${s.peerAddress}:${s.peerPort ?? ""}`],
    ...Object.entries(s.attributes ?? {}).map(([k, v]): [string, string] => [k, String(v)])
  ]
  return (
    <section class="detail" aria-labelledby="detail-title">
      <h2 id="detail-title">
        <ServiceName service={s.service} /> {s.name}
      </h2>
      <dl>
        {rows
          .filter(([, v]) => v !== undefined && v !== "")
          .map(([k, v]) => (
            <>
              <dt>{k}</dt>
              <dd class={k.includes("id") || k === "parent" ? "mono" : ""}>
                {k === "correlation id" ? (
                  <Link href={`/correlate/${encodeURIComponent(v ?? "")}`}>{v}</Link>
                ) : (
                  v
                )}
              </dd>
            </>
          ))}
      </dl>
    </section>
  )
}

export const LogTable = (props: {
  readonly logs: ReadonlyArray<LogRecord>
  readonly highlight?: string | undefined
  readonly label: string
}) =>
  props.logs.length === 0 ? (
    <p class="muted">No log lines.</p>
  ) : (
    <table class="grid logs" aria-label={props.label}>
      <Head columns={["Time", "Service", "Level", "Message"]} />
      <tbody>
        {props.logs.map((l) => (
          <tr
            class={`level-${l.level} ${props.highlight !== undefined && l.spanId === props.highlight ? "highlight" : ""}`}
          >
            <td class="mono">{clock(l.timeUnixNano)}</td>
            <td>
              <ServiceName service={l.service} />
            </td>
            <td>
              <span class={`level ${l.level}`}>{l.level}</span>
            </td>
            <td class="mono body" title={l.body}>
              {Format.logText(l.body)}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  )

export const Trace = (props: { readonly traceId: string }) => {
  const state = useQuery(() => load(props.traceId), props.traceId)
  const [selected, setSelected] = useState<string | undefined>(undefined)
  return (
    <section aria-labelledby="trace-title">
      <div class="page-head">
        <h1 id="trace-title">
          Trace <span class="mono">{props.traceId}</span>
        </h1>
      </div>
      <Loading state={state}>
        {({ spans, logs }) => {
          const rows = SpanTree.order(spans)
          const { start, end } = SpanTree.extent(spans)
          const total = Math.max(1, Number(end - start))
          const chosen = spans.find((s) => s.spanId === selected) ?? rows[0]?.span
          const services = Array.from(new Set(spans.map((s) => s.service)))
          return (
            <>
              <p class="summary">
                {spans.length} spans across {services.length} service{services.length === 1 ? "" : "s"} (
                {services.join(", ")}), {duration(total / 1e6)}, started {dateTime(start)}.{" "}
                {spans[0] !== undefined && (
                  <Link href={`/correlate/${encodeURIComponent(spans[0].correlationId)}`}>
                    Everything with its correlation id
                  </Link>
                )}
              </p>
              <section
                class="waterfall"
                aria-label="Waterfall: each span's start and duration within the trace"
              >
                <div class="axis" aria-hidden="true">
                  <span />
                  <span class="ticks">
                    {[0, 0.25, 0.5, 0.75, 1].map((f) => (
                      <span style={{ left: `${f * 100}%` }}>{duration((total * f) / 1e6)}</span>
                    ))}
                  </span>
                </div>
                {rows.map(({ span, depth, inferred }) => {
                  const offset = Number(BigInt(span.startTimeUnixNano) - start)
                  return (
                    <button
                      type="button"
                      class={`span-row ${span.error ? "error" : ""} ${chosen?.spanId === span.spanId ? "selected" : ""}`}
                      aria-pressed={chosen?.spanId === span.spanId}
                      data-span-id={span.spanId}
                      onClick={() => setSelected(span.spanId)}
                    >
                      <span class="span-name" style={{ paddingLeft: `${depth * 16 + 4}px` }}>
                        {inferred && (
                          <span
                            class="inferred"
                            title="Its parent span was not captured: shown under the call that encloses it in time"
                          >
                            ≈{" "}
                          </span>
                        )}
                        <ServiceName service={span.service} /> <span class="kind">{span.kind}</span>{" "}
                        {span.name} <HttpStatus code={span.http?.statusCode} />
                      </span>
                      <span class="span-track">
                        <span
                          class="span-bar"
                          style={{
                            left: `${(offset / total) * 100}%`,
                            width: `${Math.max(0.4, (span.durationNano / total) * 100)}%`,
                            background: serviceColor(span.service)
                          }}
                        />
                        <span
                          class="span-time"
                          style={{ left: `${Math.min(92, ((offset + span.durationNano) / total) * 100)}%` }}
                        >
                          {duration(nanosToMs(span.durationNano))}
                        </span>
                      </span>
                    </button>
                  )
                })}
              </section>
              {chosen !== undefined && <Detail span={chosen} />}
              <h2 id="logs-title">Logs</h2>
              <LogTable logs={logs} highlight={chosen?.spanId} label="Logs of this trace" />
              <p>
                <Link href={withParams("/search", { service: chosen?.service, since: "1h" })}>
                  More traces of {chosen?.service}
                </Link>
              </p>
            </>
          )
        }}
      </Loading>
    </section>
  )
}
