/**
 * Route normalisation: raw request targets → low-cardinality `http.route` values.
 *
 * The rule, applied to each `/`-separated path segment (query string and fragment dropped first; an
 * absolute-form target `http://host/p` is reduced to its path):
 *   - all digits (`123`)                                         → `{id}`
 *   - a UUID (`3f2a…-…`, any case)                                 → `{id}`
 *   - hex of 8+ characters containing a digit (`5f1d7a3b`, Mongo ids, hashes) → `{id}`
 *   - a token of 16+ characters from `[A-Za-z0-9_-.~=+]` mixing letters and digits
 *     (API keys, base64 ids, JWT-ish slugs)                       → `{id}`
 *   - anything longer than 64 characters                          → `{id}`
 *   - otherwise the segment is kept (`users`, `v2`, `me`)
 * Empty segments are kept (`/a//b` stays), the path `""` becomes `/`, `*` stays `*`. At most 12 segments
 * are kept; deeper paths end in `/{rest}`.
 *
 * Cardinality is bounded per table (one per service and span kind): after `maxRoutes` distinct routes
 * (default 500) every new route is reported as `{other}`.
 */

const digits = /^\d+$/
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const hexId = /^[0-9a-f]{8,}$/i
const hasDigit = /\d/
const token = /^[A-Za-z0-9_\-.~=+]{16,}$/
const hasLetter = /[A-Za-z]/

export const idPlaceholder = "{id}"
export const overflowRoute = "{other}"
const maxSegments = 12

const normaliseSegment = (segment: string): string => {
  if (segment.length === 0) return segment
  if (segment.length > 64) return idPlaceholder
  if (digits.test(segment)) return idPlaceholder
  if (segment.length < 8) return segment
  if (uuid.test(segment)) return idPlaceholder
  if (hasDigit.test(segment) && (hexId.test(segment) || (token.test(segment) && hasLetter.test(segment)))) {
    return idPlaceholder
  }
  return segment
}

/** The path of a request target, without query or fragment. */
export const pathOf = (target: string): string => {
  let path = target
  if (!path.startsWith("/")) {
    // absolute form (`http://host:port/path`) as sent to proxies; authority form (CONNECT) and `*` stay.
    const scheme = path.indexOf("://")
    if (scheme !== -1) {
      const slash = path.indexOf("/", scheme + 3)
      path = slash === -1 ? "/" : path.slice(slash)
    }
  }
  const cut = path.search(/[?#]/)
  return cut === -1 ? path : path.slice(0, cut)
}

/** Normalises a request target into a route (pure, no cardinality bound). */
export const normalise = (target: string): string => {
  const path = pathOf(target)
  if (path === "" || path === "/") return "/"
  if (!path.startsWith("/")) return path
  const segments = path.split("/")
  const kept = segments.length - 1 > maxSegments ? segments.slice(0, maxSegments + 1) : segments
  let route = ""
  for (let i = 1; i < kept.length; i++) route += `/${normaliseSegment(kept[i] ?? "")}`
  return kept.length < segments.length ? `${route}/{rest}` : route
}

/** A bounded set of routes: the first `maxRoutes` distinct routes are kept, later ones become `{other}`. */
export class RouteTable {
  private readonly known = new Set<string>()
  private readonly cache = new Map<string, string>()
  /** Requests whose route was folded into `{other}`. */
  overflowed = 0

  constructor(readonly maxRoutes = 500) {}

  get size(): number {
    return this.known.size
  }

  route(target: string): string {
    const cached = this.cache.get(target)
    if (cached !== undefined) return cached
    const normalised = normalise(target)
    let route = normalised
    if (!this.known.has(normalised)) {
      if (this.known.size < this.maxRoutes) this.known.add(normalised)
      else route = overflowRoute
    }
    if (route === overflowRoute) this.overflowed++
    // Remember raw targets too, but only a bounded number of them.
    else if (this.cache.size < this.maxRoutes * 8) this.cache.set(target, route)
    return route
  }
}
