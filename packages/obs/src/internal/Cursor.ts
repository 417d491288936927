/**
 * Search pagination cursors: the position (start micros, trace id, span id) of the last match returned.
 * The next page returns matches strictly older than it. Encoded as base64url JSON so it is opaque to
 * clients but stable across nodes.
 */
import { Option } from "effect"

export interface Position {
  readonly startMicros: number
  readonly traceId: string
  readonly spanId: string
}

export const encodeCursor = (p: Position): string =>
  Buffer.from(JSON.stringify([p.startMicros, p.traceId, p.spanId])).toString("base64url")

export const decodeCursor = (cursor: string): Option.Option<Position> => {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"))
    if (
      Array.isArray(parsed) &&
      parsed.length === 3 &&
      typeof parsed[0] === "number" &&
      Number.isFinite(parsed[0]) &&
      typeof parsed[1] === "string" &&
      typeof parsed[2] === "string"
    )
      return Option.some({ startMicros: parsed[0], traceId: parsed[1], spanId: parsed[2] })
    return Option.none()
  } catch {
    return Option.none()
  }
}

/** Total order of positions, newest first: negative when `a` comes before `b` in a newest-first listing. */
export const newestFirst = (a: Position, b: Position): number =>
  b.startMicros - a.startMicros ||
  (a.traceId < b.traceId ? 1 : a.traceId > b.traceId ? -1 : 0) ||
  (a.spanId < b.spanId ? 1 : a.spanId > b.spanId ? -1 : 0)
