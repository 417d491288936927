/** `/tail?service=…&route=…&status=…&minDuration=…`: requests as they are stored, newest first. */
import { useEffect, useState } from "preact/hooks"
import { openTail, type Span } from "../api.js"
import { clock, duration, nanosToMs } from "../format.js"
import { Link, type Location, navigate, withParams } from "../router.js"
import { Head, HttpStatus, ServiceName, TextField } from "../ui.js"

const names = ["service", "route", "status", "minDuration"] as const
const keep = 500

type Connection = "connecting" | "live" | "closed"

export const Tail = (props: { readonly loc: Location }) => {
  const filters = Object.fromEntries(names.map((n) => [n, props.loc.params.get(n) ?? undefined])) as Record<
    (typeof names)[number],
    string | undefined
  >
  const key = JSON.stringify(filters)
  const [spans, setSpans] = useState<ReadonlyArray<Span>>([])
  const [paused, setPaused] = useState(false)
  const [connection, setConnection] = useState<Connection>("connecting")
  const [problem, setProblem] = useState<string | undefined>(undefined)
  const [dropped, setDropped] = useState(0)
  useEffect(() => {
    setSpans([])
    setProblem(undefined)
    setConnection("connecting")
    const ws = openTail({ ...filters, format: "json" })
    ws.onopen = () => setConnection("live")
    ws.onclose = (e) => {
      setConnection("closed")
      if (e.code === 1006)
        setProblem("The live tail was refused or lost: check the filters and the token, then reload.")
    }
    ws.onmessage = (e) => {
      const message = JSON.parse(String(e.data)) as {
        type: string
        spans?: ReadonlyArray<Span>
        dropped?: number
      }
      if (message.type === "dropped") setDropped((d) => d + (message.dropped ?? 0))
      if (message.type === "spans" && message.spans !== undefined) {
        const arrived = [...message.spans].reverse()
        setSpans((list) => [...arrived, ...list].slice(0, keep))
      }
    }
    return () => ws.close()
  }, [key])
  const [shown, setShown] = useState<ReadonlyArray<Span>>([])
  useEffect(() => {
    if (!paused) setShown(spans)
  }, [spans, paused])
  const submit = (e: Event) => {
    e.preventDefault()
    const data = new FormData(e.target as HTMLFormElement)
    navigate(withParams("/tail", Object.fromEntries(names.map((n) => [n, String(data.get(n) ?? "").trim()]))))
  }
  return (
    <section aria-labelledby="tail-title">
      <div class="page-head">
        <h1 id="tail-title">Live tail</h1>
        <span class={`pill ${connection}`} role="status">
          {connection === "live" ? (paused ? "paused" : "live") : connection}
        </span>
        <button type="button" onClick={() => setPaused((p) => !p)} aria-pressed={paused}>
          {paused ? "Resume" : "Pause"}
        </button>
      </div>
      <form class="filters" onSubmit={submit} aria-label="Live tail filters" key={key}>
        <TextField id="tail-service" label="Service" name="service" value={filters.service} hint="any" />
        <TextField id="tail-route" label="Route" name="route" value={filters.route} hint="any" />
        <TextField id="tail-status" label="Status" name="status" value={filters.status} hint="5xx, error…" />
        <TextField
          id="tail-min-duration"
          label="Min duration"
          name="minDuration"
          value={filters.minDuration}
          hint="200ms"
        />
        <button type="submit">Apply</button>
      </form>
      {problem !== undefined && (
        <p class="error" role="alert">
          {problem}
        </p>
      )}
      {dropped > 0 && <p class="notice">{dropped} spans were dropped because this page fell behind.</p>}
      {shown.length === 0 ? (
        <p class="muted">Waiting for requests…</p>
      ) : (
        <table class="grid" aria-label="Requests, newest first">
          <Head columns={["Time", "Service", "Request", "Status", ["Duration", "num"], "Trace"]} />
          <tbody>
            {shown.map((s) => (
              <tr class={s.error ? "has-errors" : ""}>
                <td class="mono">{clock(s.startTimeUnixNano)}</td>
                <td>
                  <ServiceName service={s.service} />
                </td>
                <td>
                  <span class="kind">{s.kind}</span> {s.http?.method}{" "}
                  {s.http?.path ?? s.http?.route ?? s.name}
                </td>
                <td>
                  <HttpStatus code={s.http?.statusCode} />
                </td>
                <td class="num">{duration(nanosToMs(s.durationNano))}</td>
                <td class="mono">
                  <Link href={`/traces/${s.traceId}`}>{s.traceId.slice(0, 12)}…</Link>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  )
}
