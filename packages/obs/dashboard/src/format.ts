/** How numbers read on the dashboard: core's `Format` (shared with the terminal tools) and the pages' own. */
export { clock, dateTime, duration, nanosToMs, percent, rate } from "../../../core/src/Format.js"

/** The windows the pages offer, and the step that gives each about 30 points (a multiple of 10 s). */
export const windows = ["5m", "15m", "1h", "6h", "24h"] as const
export type Window = (typeof windows)[number]

const windowSeconds: Record<Window, number> = {
  "5m": 300,
  "15m": 900,
  "1h": 3600,
  "6h": 21_600,
  "24h": 86_400
}

export const isWindow = (text: string | null): text is Window =>
  (windows as ReadonlyArray<string>).includes(text ?? "")

export const secondsOf = (w: Window): number => windowSeconds[w]

export const stepFor = (w: Window): string => `${Math.max(10, Math.round(windowSeconds[w] / 30 / 10) * 10)}s`

/** HTTP status → the class the colours and filters use. */
export const statusClass = (
  status: number | undefined
): "ok" | "redirect" | "client-error" | "server-error" | "none" =>
  status === undefined || status === 0
    ? "none"
    : status >= 500
      ? "server-error"
      : status >= 400
        ? "client-error"
        : status >= 300
          ? "redirect"
          : "ok"
