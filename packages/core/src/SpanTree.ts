/**
 * How a trace's spans hang together, for the waterfalls (the dashboard's, `iii trace`'s) and the
 * service map. Pure, no dependencies (the dashboard bundles it).
 *
 * A server span's caller is the client span that made its request: its parent, when that is a
 * client span of another service. When its parent was not captured (a service that forwards the
 * `traceparent` it received, as Istio asks apps to, or a hop the agent could not link), the caller is
 * inferred: the innermost client span of another service in the same trace that encloses it in time
 * and that no other server span claimed.
 */
export interface TreeSpan {
  readonly spanId: string
  readonly parentSpanId?: string | undefined
  readonly service: string
  readonly kind: string
  /** Unix nanoseconds, as a bigint or its decimal string (JSON). */
  readonly startTimeUnixNano: bigint | string
  readonly durationNano: number
}

const startOf = (s: TreeSpan) => BigInt(s.startTimeUnixNano)
const endOf = (s: TreeSpan) => startOf(s) + BigInt(s.durationNano)

/** When a trace began and ended: its earliest start and latest end, unix nanoseconds. */
export const extent = (spans: ReadonlyArray<TreeSpan>): { readonly start: bigint; readonly end: bigint } => {
  let start: bigint | undefined
  let end = 0n
  for (const s of spans) {
    if (start === undefined || startOf(s) < start) start = startOf(s)
    if (endOf(s) > end) end = endOf(s)
  }
  return { start: start ?? 0n, end: end < (start ?? 0n) ? (start ?? 0n) : end }
}

/** Each server span's caller (see above); server spans without one are not in the map. */
export const callers = <S extends TreeSpan>(spans: ReadonlyArray<S>): Map<S, S> => {
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  const found = new Map<S, S>()
  const claimed = new Set<S>()
  const servers = spans.filter((s) => s.kind === "server")
  for (const s of servers) {
    const parent = s.parentSpanId === undefined ? undefined : byId.get(s.parentSpanId)
    if (parent?.kind === "client" && parent.service !== s.service) {
      found.set(s, parent)
      claimed.add(parent)
    }
  }
  const clients = spans.filter((s) => s.kind === "client")
  for (const s of servers) {
    if (found.has(s) || (s.parentSpanId !== undefined && byId.has(s.parentSpanId))) continue
    let best: S | undefined
    for (const c of clients) {
      if (claimed.has(c) || c.service === s.service) continue
      if (startOf(c) > startOf(s) || endOf(c) < endOf(s)) continue
      if (best === undefined || startOf(c) > startOf(best)) best = c
    }
    if (best !== undefined) {
      found.set(s, best)
      claimed.add(best)
    }
  }
  return found
}

/**
 * Spans in waterfall order: each right after its parent (or its inferred caller), siblings by start
 * time; a span with neither starts a tree of its own. `inferred` marks a span placed under its caller
 * by time alone.
 */
export const order = <S extends TreeSpan>(
  spans: ReadonlyArray<S>
): ReadonlyArray<{ span: S; depth: number; inferred: boolean }> => {
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  const inferredCallers = callers(spans)
  const children = new Map<S, Array<S>>()
  const roots: Array<S> = []
  const inferred = new Set<S>()
  for (const s of spans) {
    const captured =
      s.parentSpanId === undefined || s.parentSpanId === s.spanId ? undefined : byId.get(s.parentSpanId)
    const parent = captured ?? inferredCallers.get(s)
    if (parent === undefined) roots.push(s)
    else {
      if (captured === undefined) inferred.add(s)
      children.set(parent, [...(children.get(parent) ?? []), s])
    }
  }
  const byStart = (a: S, b: S) => {
    const x = startOf(a)
    const y = startOf(b)
    return x < y ? -1 : x > y ? 1 : 0
  }
  const out: Array<{ span: S; depth: number; inferred: boolean }> = []
  const seen = new Set<S>()
  const walk = (s: S, depth: number) => {
    if (seen.has(s)) return
    seen.add(s)
    out.push({ span: s, depth, inferred: inferred.has(s) })
    for (const c of (children.get(s) ?? []).sort(byStart)) walk(c, depth + 1)
  }
  for (const r of roots.sort(byStart)) walk(r, 0)
  // A cycle of parent links leaves spans unreached: show them rather than lose them.
  for (const s of [...spans].sort(byStart)) walk(s, 0)
  return out
}
