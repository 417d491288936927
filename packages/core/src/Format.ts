/**
 * How iii writes durations, rates, shares and times for people, the same in the dashboard and in the
 * terminal tools (`iii top`, `iii tail`, …). Pure, no dependencies (the dashboard bundles it).
 */

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

/** Requests per second: `0`, `<0.01/s`, `0.25/s`, `3.2/s`, `1.2k/s`. */
export const rate = (perSec: number): string => {
  if (perSec === 0) return "0"
  if (perSec < 0.01) return "<0.01/s"
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

/** A log line as people read it: a JSON line's `msg` or `message` (level and ids are shown apart), else the line. */
export const logText = (body: string): string => {
  if (!body.startsWith("{")) return body
  try {
    const fields = JSON.parse(body) as Record<string, unknown>
    const text = fields.msg ?? fields.message
    return typeof text === "string" ? text : body
  } catch {
    return body
  }
}
