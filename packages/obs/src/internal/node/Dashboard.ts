/**
 * The dashboard, served by the node itself: static files built by `npm run build` from
 * `packages/obs/dashboard/` into `dist/dashboard/` (shipped with the package; nothing from a CDN).
 *
 * Every path that is not the API (`/v1/…`, `/apis/…`) nor a probe is the dashboard's: a file of the
 * build when one has that name, else `index.html`, so the client-side routes (`/traces/{id}`,
 * `/search?…`) survive a reload and can be shared. The files need no token (they hold no data; the
 * page asks for the token and sends it with every query). Hashed assets are cached for good,
 * `index.html` never; a Content-Security-Policy keeps the page to this origin.
 *
 * In the browser, a WebSocket cannot carry an Authorization header: the live tail's page offers the
 * token as a subprotocol, which `SocketRules` accepts on every upgrade.
 */
import { existsSync, readFileSync, statSync } from "node:fs"
import { dirname, extname, join, normalize, sep } from "node:path"
import { fileURLToPath } from "node:url"

/** The built dashboard of this package: `dist/dashboard` beside the package's package.json. */
export const builtDirectory = (): string | undefined => {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const manifest = join(dir, "package.json")
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name === "@iii/obs")
          return join(dir, "dist", "dashboard")
      } catch {}
    }
    const parent = dirname(dir)
    if (parent === dir) return undefined
    dir = parent
  }
}

/** Paths that are the API's or the node's own, never the dashboard's. */
export const isDashboardPath = (path: string): boolean =>
  !(
    path.startsWith("/v1/") ||
    path === "/v1" ||
    path.startsWith("/apis/") ||
    path === "/apis" ||
    path === "/healthz" ||
    path === "/readyz" ||
    path === "/metrics"
  )

const types: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".txt": "text/plain; charset=utf-8"
}

const securityHeaders = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer"
}

export interface StaticFile {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Buffer
}

const notBuilt = (dir: string | undefined): StaticFile => ({
  status: 404,
  headers: { "content-type": "text/plain; charset=utf-8", ...securityHeaders },
  body: Buffer.from(
    `The dashboard is not built${dir === undefined ? "" : ` (no ${join(dir, "index.html")})`}: run \`npm run build\`.\nThe query API is at /v1/.\n`
  )
})

const isFile = (path: string) => {
  try {
    return statSync(path).isFile()
  } catch {
    return false
  }
}

/** The answer to `GET path` from the dashboard's directory. */
export const serve = (dir: string | undefined, path: string): StaticFile => {
  if (dir === undefined) return notBuilt(dir)
  let relative: string
  try {
    relative = normalize(decodeURIComponent(path)).replace(/^[/\\]+/, "")
  } catch {
    relative = ""
  }
  const candidate = join(dir, relative)
  const inside = candidate === dir || candidate.startsWith(dir.endsWith(sep) ? dir : dir + sep)
  const file = inside && relative !== "" && isFile(candidate) ? candidate : join(dir, "index.html")
  if (!isFile(file)) return notBuilt(dir)
  const immutable = file.includes(`${sep}assets${sep}`)
  return {
    status: 200,
    headers: {
      "content-type": types[extname(file)] ?? "application/octet-stream",
      "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
      ...securityHeaders
    },
    body: readFileSync(file)
  }
}
