/** uPlot charts: a sparkline for tables and a time chart with axes and a legend. */
import { useEffect, useRef } from "preact/hooks"
import uPlot from "uplot"
import "uplot/dist/uPlot.min.css"

const cssVar = (name: string) => getComputedStyle(document.documentElement).getPropertyValue(name).trim()

/** Re-draws when the colour scheme flips, so the chart follows light and dark. */
const schemeKey = () => document.documentElement.dataset.theme ?? ""

export const Sparkline = (props: {
  readonly values: ReadonlyArray<number | null>
  readonly label: string
  /** A CSS variable holding the colour (canvas strokes cannot use var()). */
  readonly colorVar?: string
}) => {
  const ref = useRef<HTMLDivElement>(null)
  const key = `${props.values.join(",")}|${schemeKey()}`
  useEffect(() => {
    const el = ref.current
    if (el === null) return
    const xs = props.values.map((_, i) => i)
    const plot = new uPlot(
      {
        width: 120,
        height: 28,
        pxAlign: false,
        cursor: { show: false },
        legend: { show: false },
        select: { show: false, left: 0, top: 0, width: 0, height: 0 },
        scales: { x: { time: false }, y: { range: (_u, _min, max) => [0, Math.max(max, 1e-9)] } },
        axes: [{ show: false }, { show: false }],
        series: [{}, { stroke: cssVar(props.colorVar ?? "--accent"), width: 1.5, spanGaps: true }]
      },
      [xs, props.values as Array<number | null>],
      el
    )
    return () => plot.destroy()
  }, [key])
  return <div class="sparkline" ref={ref} role="img" aria-label={props.label} />
}

export interface Line {
  readonly label: string
  readonly values: ReadonlyArray<number | null>
  /** A CSS variable holding the colour. */
  readonly colorVar: string
  readonly format: (v: number | null) => string
}

export const TimeChart = (props: {
  readonly title: string
  readonly times: ReadonlyArray<number>
  readonly lines: ReadonlyArray<Line>
}) => {
  const ref = useRef<HTMLDivElement>(null)
  const key = `${props.times.join(",")}|${props.lines.map((l) => l.values.join(",")).join("|")}|${schemeKey()}`
  useEffect(() => {
    const el = ref.current
    if (el === null) return
    const axis = {
      stroke: cssVar("--muted"),
      grid: { stroke: cssVar("--grid") },
      ticks: { stroke: cssVar("--grid") }
    }
    const plot = new uPlot(
      {
        width: Math.max(240, el.clientWidth),
        height: 160,
        axes: [
          axis,
          {
            ...axis,
            size: 76,
            values: (_u, ticks) => ticks.map((t) => props.lines[0]?.format(t) ?? String(t))
          }
        ],
        scales: { y: { range: (_u, _min, max) => [0, Math.max(max, 1e-9)] } },
        series: [
          {},
          ...props.lines.map((l) => ({
            label: l.label,
            stroke: cssVar(l.colorVar),
            width: 1.5,
            value: (_u: uPlot, v: number | null) => l.format(v)
          }))
        ]
      },
      [props.times as Array<number>, ...props.lines.map((l) => l.values as Array<number | null>)],
      el
    )
    const resize = new ResizeObserver(() =>
      plot.setSize({ width: Math.max(240, el.clientWidth), height: 160 })
    )
    resize.observe(el)
    return () => {
      resize.disconnect()
      plot.destroy()
    }
  }, [key])
  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={ref} />
    </figure>
  )
}
