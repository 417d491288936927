/** `/map`: who calls whom, with the rate and error rate of each edge (`/v1/dependencies`). */
import { type Dependencies, get } from "../api.js"
import { isWindow, percent, rate, type Window } from "../format.js"
import { useQuery } from "../hooks.js"
import { Link, type Location, navigate, withParams } from "../router.js"
import { Head, Loading, RedCells, ServiceName, serviceColor, WindowPicker } from "../ui.js"

interface Placed {
  readonly name: string
  readonly external: boolean
  readonly x: number
  readonly y: number
  readonly label: string
}

const nodeWidth = 170
const nodeHeight = 46
const columnGap = 110
const rowGap = 36

/** Columns by call depth from the entry points (callers left, callees right); rows in name order. */
export const layout = (
  deps: Dependencies
): { nodes: ReadonlyArray<Placed>; width: number; height: number } => {
  const names = new Set<string>(deps.nodes.map((n) => n.service))
  for (const e of deps.edges) {
    names.add(e.caller)
    names.add(e.callee)
  }
  const depth = new Map<string, number>()
  for (const n of names) depth.set(n, 0)
  // Longest path from an entry, bounded by the node count so a cycle cannot loop for ever.
  for (let round = 0; round < names.size; round++)
    for (const e of deps.edges) {
      const d = (depth.get(e.caller) ?? 0) + 1
      if (e.caller !== e.callee && d > (depth.get(e.callee) ?? 0) && d < names.size) depth.set(e.callee, d)
    }
  const columns = new Map<number, Array<string>>()
  for (const [n, d] of depth) columns.set(d, [...(columns.get(d) ?? []), n].sort())
  const rates = new Map(deps.nodes.map((n) => [n.service, n]))
  const tallest = Math.max(1, ...Array.from(columns.values(), (c) => c.length))
  const height = tallest * (nodeHeight + rowGap) + rowGap
  const nodes: Array<Placed> = []
  for (const [d, column] of columns)
    column.forEach((name, i) => {
      const node = rates.get(name)
      const offset = (height - column.length * (nodeHeight + rowGap) + rowGap) / 2
      nodes.push({
        name,
        external: node === undefined,
        x: 20 + d * (nodeWidth + columnGap),
        y: offset + i * (nodeHeight + rowGap),
        label:
          node === undefined
            ? "not traced"
            : `${rate(node.ratePerSec)} · ${percent(node.requests === 0 ? 0 : node.errors / node.requests)} errors`
      })
    })
  const width = 40 + (Math.max(0, ...depth.values()) + 1) * (nodeWidth + columnGap) - columnGap
  return { nodes, width, height }
}

export const ServiceMap = (props: { readonly loc: Location }) => {
  const s = props.loc.params.get("since")
  const since: Window = isWindow(s) ? s : "15m"
  const state = useQuery(() => get<Dependencies>("/v1/dependencies", { since }), since, 15_000)
  return (
    <section aria-labelledby="map-title">
      <div class="page-head">
        <h1 id="map-title">Service map</h1>
        <WindowPicker value={since} onChange={(next) => navigate(withParams("/map", { since: next }))} />
      </div>
      <Loading state={state}>
        {(deps) => {
          if (deps.nodes.length === 0 && deps.edges.length === 0)
            return <p class="muted">No traces in the last {since}.</p>
          const { nodes, width, height } = layout(deps)
          const at = new Map(nodes.map((n) => [n.name, n]))
          return (
            <>
              <p class="muted">
                From the {deps.tracesExamined} newest traces{deps.complete ? ` of the last ${since}` : ""},
                covering {Math.round(deps.coveredSec)} s.
              </p>
              <div class="map-scroll">
                <svg class="map" viewBox={`0 0 ${width} ${height}`} width={width} height={height} role="img">
                  <title>Service map: services and the calls between them</title>
                  <defs>
                    <marker
                      id="arrow"
                      viewBox="0 0 10 10"
                      refX="10"
                      refY="5"
                      markerWidth="7"
                      markerHeight="7"
                      orient="auto-start-reverse"
                    >
                      <path d="M 0 0 L 10 5 L 0 10 z" class="arrow" />
                    </marker>
                  </defs>
                  {deps.edges.map((e) => {
                    const from = at.get(e.caller)
                    const to = at.get(e.callee)
                    if (from === undefined || to === undefined) return null
                    const x1 = from.x + nodeWidth
                    const y1 = from.y + nodeHeight / 2
                    const x2 = to.x
                    const y2 = to.y + nodeHeight / 2
                    const mx = (x1 + x2) / 2
                    const errorRate = e.calls === 0 ? 0 : e.errors / e.calls
                    return (
                      <g class={`edge ${errorRate > 0.05 ? "bad" : ""}`}>
                        <path
                          d={`M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`}
                          marker-end="url(#arrow)"
                        />
                        <text x={mx} y={(y1 + y2) / 2 - 6} text-anchor="middle">
                          {rate(e.ratePerSec)} · {percent(errorRate)}
                        </text>
                      </g>
                    )
                  })}
                  {nodes.map((n) => {
                    const box = (
                      <>
                        <rect x={n.x} y={n.y} width={nodeWidth} height={nodeHeight} rx="6" />
                        <rect
                          x={n.x}
                          y={n.y}
                          width="5"
                          height={nodeHeight}
                          rx="2"
                          fill={n.external ? "var(--muted)" : serviceColor(n.name)}
                        />
                        <text x={n.x + 14} y={n.y + 19} class="name">
                          {n.name}
                        </text>
                        <text x={n.x + 14} y={n.y + 36} class="figures">
                          {n.label}
                        </text>
                      </>
                    )
                    if (n.external) return <g class="node external">{box}</g>
                    const href = `/services/${encodeURIComponent(n.name)}`
                    return (
                      <a href={href} class="node">
                        {box}
                      </a>
                    )
                  })}
                </svg>
              </div>
              <h2>Calls</h2>
              <table class="grid">
                <Head
                  columns={[
                    "Caller",
                    "Callee",
                    ["Rate", "num"],
                    ["Errors", "num"],
                    ["p50", "num"],
                    ["p99", "num"]
                  ]}
                />
                <tbody>
                  {deps.edges.map((e) => (
                    <tr>
                      <td>
                        <Link href={`/services/${encodeURIComponent(e.caller)}`}>
                          <ServiceName service={e.caller} />
                        </Link>
                      </td>
                      <td>
                        {e.external ? (
                          <span class="muted">{e.callee} (not traced)</span>
                        ) : (
                          <ServiceName service={e.callee} />
                        )}
                      </td>
                      <RedCells
                        amount={rate(e.ratePerSec)}
                        errorRate={e.calls === 0 ? 0 : e.errors / e.calls}
                        p50={e.p50Ms}
                        p99={e.p99Ms}
                      />
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )
        }}
      </Loading>
    </section>
  )
}
