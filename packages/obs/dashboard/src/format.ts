/** How numbers read on the dashboard (and nowhere else): pure, tested in packages/obs/test. */

/** Milliseconds → `850 µs`, `12.3 ms`, `1.24 s`, `2.5 min`; `–` for none. */
export const duration = (ms: number | null | undefined): string => {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–"
  if (ms === 0) return "0"
  if (ms < 1) return `${Math.round(ms * 1000)} µs`
  if (ms < 100) return `${ms.toFixed(1)} ms`
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`
  return `${(ms / 60_000).toFixed(1)} min`
}

export const nanosToMs = (nanos: number | string): number => Number(nanos) / 1e6

/** Requests per second: `0`, `0.25/s`, `3.2/s`, `1.2k/s`. */
export const rate = (perSec: number): string => {
  if (perSec === 0) return "0"
  if (perSec < 1) return `${perSec.toFixed(2)}/s`
  if (perSec < 1000) return `${perSec.toFixed(1)}/s`
  return `${(perSec / 1000).toFixed(1)}k/s`
}

/** A fraction as a percentage: `0%`, `0.4%`, `12%`. */
export const percent = (fraction: number): string => {
  if (fraction === 0) return "0%"
  const p = fraction * 100
  return p < 10 ? `${p.toFixed(1)}%` : `${Math.round(p)}%`
}

const pad = (n: number, width = 2) => String(n).padStart(width, "0")

/** Unix nanoseconds (decimal string) → local `HH:MM:SS.mmm`. */
export const clock = (unixNano: string | bigint): string => {
  const ms = Number(BigInt(unixNano) / 1_000_000n)
  const d = new Date(ms)
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
}

/** Unix nanoseconds → local `YYYY-MM-DD HH:MM:SS`. */
export const dateTime = (unixNano: string | bigint): string => {
  const d = new Date(Number(BigInt(unixNano) / 1_000_000n))
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
}

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
