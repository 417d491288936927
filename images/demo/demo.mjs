/**
 * The e2e test's demo services, plain Node.js with no iii code in them, as any traced app is:
 *
 *   node demo.mjs profile                 GET /profile/NAME -> {"user","plan"}
 *   node demo.mjs auth                    GET /login?user=NAME[&slow=MS] -> calls profile, then {"user","plan"}
 *   node demo.mjs load URL COUNT [SLOW_MS] COUNT requests to URL (4 at a time), each in a trace of its own
 *
 * Each service propagates W3C `traceparent` to what it calls and writes its trace id into its JSON log
 * lines, as an app with an OpenTelemetry SDK does: the agent sees the header on the wire, so `auth`'s
 * client span and `profile`'s server span join the caller's trace. Listens on $PORT (8080); auth finds
 * profile at $PROFILE_URL (http://user-service-profile:8080, the seed composition's Service).
 */
import { randomBytes } from "node:crypto"
import http from "node:http"

// The role is the first argument, or $DEMO_ROLE (what each demo image sets, so pods need no arguments).
const [role = process.env.DEMO_ROLE, ...args] = process.argv.slice(2)
const port = Number(process.env.PORT ?? 8080)
const profileUrl = process.env.PROFILE_URL ?? "http://user-service-profile:8080"
// auth keeps its connections to profile open, as services do; the load generator opens one per request, so
// kube-proxy spreads its requests over every auth pod (a kept-alive connection stays with one).
const agent = new http.Agent({ keepAlive: role !== "load" })

const log = (level, msg, fields) =>
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`)
const hex = (bytes) => randomBytes(bytes).toString("hex")
/** The caller's trace id, or a new trace when it sent none (or a malformed one). */
const traceOf = (req) =>
  /^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(req.headers.traceparent ?? "")?.[1] ?? hex(16)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const get = (url, traceId) =>
  new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers: { traceparent: `00-${traceId}-${hex(8)}-01` } }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk) => (body += chunk))
      res.on("end", () => resolve({ status: res.statusCode, body }))
    })
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${url}: no answer in 10 s`)))
    req.on("error", reject)
  })

const serve = (handler) => {
  const server = http.createServer((req, res) => {
    const traceId = traceOf(req)
    handler(new URL(req.url ?? "/", "http://demo"), traceId).then(
      ({ status, body }) =>
        res.writeHead(status, { "content-type": "application/json" }).end(`${JSON.stringify(body)}\n`),
      (error) => {
        log("error", `${req.url} failed: ${error.message}`, { traceId })
        res
          .writeHead(502, { "content-type": "application/json" })
          .end(`${JSON.stringify({ error: error.message })}\n`)
      }
    )
  })
  server.listen(port, () => log("info", `${role} listening on ${port}`, {}))
  process.on("SIGTERM", () => server.close(() => process.exit(0)))
}

const profile = async (url, traceId) => {
  const user = /^\/profile\/([\w-]+)$/.exec(url.pathname)?.[1]
  if (user === undefined) return { status: 404, body: { error: "not found" } }
  await sleep(2 + Math.random() * 8)
  log("info", `profile of ${user} served`, { traceId, user })
  return { status: 200, body: { user, plan: user.length % 2 === 0 ? "pro" : "free" } }
}

const auth = async (url, traceId) => {
  if (url.pathname === "/healthz") return { status: 200, body: { ok: true } }
  const user = url.searchParams.get("user")
  if (url.pathname !== "/login" || user === null) return { status: 404, body: { error: "not found" } }
  // ?slow=MS: a slow dependency of auth's own, which the HPA's p99 target should answer with more replicas.
  await sleep(Number(url.searchParams.get("slow") ?? 0))
  const answer = await get(`${profileUrl}/profile/${encodeURIComponent(user)}`, traceId)
  if (answer.status !== 200) throw new Error(`profile answered ${answer.status}`)
  log("info", `${user} logged in`, { traceId, user })
  return { status: 200, body: JSON.parse(answer.body) }
}

const load = async (url, count, slowMs) => {
  let next = 0
  const results = { ok: 0, failed: 0, traceIds: [] }
  const worker = async () => {
    while (next < count) {
      const i = next++
      const traceId = hex(16)
      const target = `${url}?user=user-${i}${slowMs > 0 ? `&slow=${slowMs}` : ""}`
      const answer = await get(target, traceId).catch((error) => ({ status: 0, body: error.message }))
      if (answer.status === 200) {
        results.ok++
        if (results.traceIds.length < 20) results.traceIds.push(traceId)
      } else {
        results.failed++
        log("warn", `GET ${target}: ${answer.status} ${answer.body.trim()}`, { traceId })
      }
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()])
  // One line the e2e test reads back: what was sent, and some trace ids to look up.
  process.stdout.write(`${JSON.stringify({ result: results })}\n`)
  process.exitCode = results.failed === 0 ? 0 : 1
}

if (role === "profile") serve(profile)
else if (role === "auth") serve(auth)
else if (role === "load") await load(args[0], Number(args[1] ?? 100), Number(args[2] ?? 0))
else {
  process.stderr.write("usage: demo.mjs profile | auth | load URL COUNT [SLOW_MS]\n")
  process.exitCode = 2
}
