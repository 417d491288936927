/** Small pieces every page uses. */
import type { ComponentChildren } from "preact"
import * as Format from "../../../core/src/Format.js"
import { ApiError, Unauthorized } from "./api.js"
import { statusClass, type Window, windows } from "./format.js"
import type { Loaded } from "./hooks.js"

/** What a page shows while its data loads or when it failed; the data once it is there. */
export const Loading = <A,>(props: {
  readonly state: Loaded<A>
  readonly children: (data: A) => ComponentChildren
}) => {
  const { data, error, loading } = props.state
  return (
    <>
      {error !== undefined && !(error instanceof Unauthorized) && (
        <p class="error" role="alert">
          {error instanceof ApiError && error.parameter !== undefined ? `${error.parameter}: ` : ""}
          {error.message}
        </p>
      )}
      {error instanceof Unauthorized && (
        <p class="notice" role="status">
          Waiting for the token…
        </p>
      )}
      {data === undefined
        ? loading && (
            <p class="muted" role="status">
              Loading…
            </p>
          )
        : props.children(data)}
    </>
  )
}

export const WindowPicker = (props: {
  readonly value: Window
  readonly onChange: (w: Window) => void
  readonly label?: string
}) => (
  <div class="field">
    <label for={`window-${props.label ?? "Window"}`.toLowerCase().replaceAll(" ", "-")}>
      {props.label ?? "Window"}
    </label>
    <select
      id={`window-${props.label ?? "Window"}`.toLowerCase().replaceAll(" ", "-")}
      value={props.value}
      onChange={(e) => props.onChange((e.target as HTMLSelectElement).value as Window)}
    >
      {windows.map((w) => (
        <option value={w}>last {w}</option>
      ))}
    </select>
  </div>
)

export const HttpStatus = (props: { readonly code: number | undefined }) => (
  <span class={`status ${statusClass(props.code)}`}>
    {props.code === undefined || props.code === 0 ? "no response" : props.code}
  </span>
)

// Twelve hues far enough apart to tell services apart, in light and dark.
const palette = [
  "#4e79a7",
  "#f28e2b",
  "#59a14f",
  "#e15759",
  "#b07aa1",
  "#edc948",
  "#76b7b2",
  "#ff9da7",
  "#9c755f",
  "#8cd17d",
  "#bab0ac",
  "#d37295"
]

/** A stable colour per service (FNV-1a of its name), the same on every page. */
export const serviceColor = (service: string): string => {
  let h = 0x811c9dc5
  for (let i = 0; i < service.length; i++) h = Math.imul(h ^ service.charCodeAt(i), 0x01000193)
  return palette[(h >>> 0) % palette.length] ?? "#888"
}

export const ServiceName = (props: { readonly service: string }) => (
  <span class="service">
    <span class="dot" style={{ background: serviceColor(props.service) }} aria-hidden="true" />
    {props.service}
  </span>
)

/** A table's header row: a label per column; `num` columns align right, `hidden` ones are for screen readers only. */
export const Head = (props: {
  readonly columns: ReadonlyArray<string | readonly [string, "num" | "hidden"]>
}) => (
  <thead>
    <tr>
      {props.columns.map((column) => {
        const [label, kind] = typeof column === "string" ? [column, undefined] : column
        return (
          <th scope="col" class={kind === "num" ? "num" : undefined}>
            {kind === "hidden" ? <span class="sr-only">{label}</span> : label}
          </th>
        )
      })}
    </tr>
  </thead>
)

/** A labelled text box of a filter form, showing the value in the address. */
export const TextField = (props: {
  readonly id: string
  readonly label: string
  readonly name: string
  readonly value: string | undefined
  readonly hint: string
}) => (
  <div class="field">
    <label for={props.id}>{props.label}</label>
    <input
      id={props.id}
      name={props.name}
      defaultValue={props.value ?? ""}
      placeholder={props.hint}
      autocomplete="off"
    />
  </div>
)

/** A row's RED cells: a count or rate, the error rate (red over 5%), p50 and p99. */
export const RedCells = (props: {
  readonly amount: string
  readonly errorRate: number
  readonly p50: number | null
  readonly p99: number | null
}) => (
  <>
    <td class="num">{props.amount}</td>
    <td class={`num ${props.errorRate > 0.05 ? "bad" : ""}`}>{Format.percent(props.errorRate)}</td>
    <td class="num">{Format.duration(props.p50)}</td>
    <td class="num">{Format.duration(props.p99)}</td>
  </>
)
