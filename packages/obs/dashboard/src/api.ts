/**
 * The query API from the browser: the token (asked for once, kept in localStorage, sent as
 * `Authorization: Bearer`), JSON answers, and errors that say what went wrong.
 */
const tokenKey = "iii.token"

export const token = {
  get: (): string | undefined => localStorage.getItem(tokenKey) ?? undefined,
  set: (value: string) => localStorage.setItem(tokenKey, value.trim()),
  clear: () => localStorage.removeItem(tokenKey)
}

/** A link with `#token=…` (what `iii up` prints) stores the token and drops it from the address bar. */
export const takeTokenFromLink = (): void => {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash)
  if (match?.[1] === undefined) return
  token.set(decodeURIComponent(match[1]))
  history.replaceState(history.state, "", location.pathname + location.search)
}

/** The node wants a token (none stored, or the stored one is wrong). */
export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly parameter?: string
  ) {
    super(message)
  }
}

const listeners = new Set<() => void>()
/** Called when a request was refused for want of a token. */
export const onUnauthorized = (listener: () => void) => {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

export const query = (params: Record<string, string | undefined>): string => {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") q.set(k, v)
  const text = q.toString()
  return text === "" ? "" : `?${text}`
}

export const get = async <T>(path: string, params: Record<string, string | undefined> = {}): Promise<T> => {
  const t = token.get()
  let res: Response
  try {
    res = await fetch(`${path}${query(params)}`, {
      headers: t === undefined ? {} : { authorization: `Bearer ${t}` }
    })
  } catch {
    throw new ApiError("cannot reach the obs node: is it running?", 0)
  }
  if (res.status === 401) {
    for (const listener of listeners) listener()
    throw new Unauthorized(t === undefined ? "this node needs a token" : "the token was refused")
  }
  const body = (await res.json().catch(() => ({}))) as { error?: string; parameter?: string }
  if (!res.ok) throw new ApiError(body.error ?? `HTTP ${res.status}`, res.status, body.parameter)
  return body as T
}

/** The live tail's WebSocket; the token travels as a subprotocol (browsers cannot set headers here). */
export const openTail = (params: Record<string, string | undefined>): WebSocket => {
  const t = token.get()
  const scheme = location.protocol === "https:" ? "wss:" : "ws:"
  const bytes = new TextEncoder().encode(t ?? "")
  const base64url = btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "")
  return new WebSocket(
    `${scheme}//${location.host}/v1/tail${query(params)}`,
    t === undefined ? ["iii.tail"] : ["iii.tail", `iii.bearer.${base64url}`]
  )
}

// The answers' shapes (see packages/obs/README.md, "Query API").
export interface ServiceInfo {
  readonly service: string
  readonly composition?: string
  readonly lastSeenUnixNano: string
}

export interface RedPoint {
  readonly time: number
  readonly requests: number
  readonly errors: number
  readonly rate: number
  readonly errorRate: number
  readonly p50: number | null
  readonly p90: number | null
  readonly p95: number | null
  readonly p99: number | null
}

export interface RedSeries {
  readonly service: string
  readonly stepSec: number
  readonly points: ReadonlyArray<RedPoint>
}

export interface RouteRed {
  readonly route: string
  readonly requests: number
  readonly ratePerSec: number
  readonly errors: number
  readonly errorRate: number
  readonly p50: number | null
  readonly p99: number | null
}

export interface Span {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly parentMissing?: boolean
  readonly correlationId: string
  readonly service: string
  readonly pod?: string
  readonly kind: "server" | "client" | "internal" | "producer" | "consumer"
  readonly name: string
  readonly startTimeUnixNano: string
  readonly durationNano: number
  readonly http?: {
    readonly method: string
    readonly route: string
    readonly path?: string
    readonly statusCode?: number
  }
  readonly peerAddress?: string
  readonly peerPort?: number
  readonly error: boolean
  readonly attributes?: Record<string, string | number | boolean>
}

export interface LogRecord {
  readonly timeUnixNano: string
  readonly service: string
  readonly level: string
  readonly body: string
  readonly stream?: string
  readonly traceId?: string
  readonly spanId?: string
  readonly correlationId?: string
}

export interface TraceSummary {
  readonly traceId: string
  readonly correlationId: string
  readonly rootService: string
  readonly rootName: string
  readonly startTimeUnixNano: string
  readonly durationNano: number
  readonly spanCount: number
  readonly errorCount: number
  readonly services: ReadonlyArray<string>
}

export interface TracePage {
  readonly traces: ReadonlyArray<TraceSummary>
  readonly nextCursor?: string
}

export interface Correlation {
  readonly correlationId: string
  readonly traces: ReadonlyArray<{ readonly traceId: string; readonly spans: ReadonlyArray<Span> }>
  readonly logs: ReadonlyArray<LogRecord>
  readonly red: ReadonlyArray<{
    readonly service: string
    readonly route: string
    readonly requests: number
    readonly errors: number
    readonly errorRate: number
    readonly p50: number | null
    readonly p99: number | null
  }>
}

export interface Dependencies {
  readonly tracesExamined: number
  readonly complete: boolean
  readonly coveredSec: number
  readonly nodes: ReadonlyArray<{
    readonly service: string
    readonly requests: number
    readonly errors: number
    readonly entries: number
    readonly ratePerSec: number
  }>
  readonly edges: ReadonlyArray<{
    readonly caller: string
    readonly callee: string
    readonly external: boolean
    readonly calls: number
    readonly errors: number
    readonly p50Ms: number
    readonly p99Ms: number
    readonly ratePerSec: number
  }>
}
