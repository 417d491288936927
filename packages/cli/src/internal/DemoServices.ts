/**
 * The three small services of `iii up`'s built-in demo, a shop: `frontend` serves the shop's pages
 * and checkout, `catalog` knows the products, `payments` charges cards. Plain Node.js with no iii
 * code in it, as any traced app is:
 *
 *   node DemoServices.js frontend|catalog|payments
 *
 * Each listens on $PORT and finds the others as a pod finds Services in Kubernetes, through
 * `SHOP_CATALOG_SERVICE_HOST`/`_PORT` and `SHOP_PAYMENTS_SERVICE_HOST`/`_PORT`.
 *
 * Like apps behind Istio or Linkerd, they forward the trace headers of the request they serve
 * (`traceparent`, `x-iii-correlation-id`) to the calls they make for it, and write JSON log lines
 * naming the trace, so one checkout is one trace across the three services with its logs beside it.
 * Some routes are slow, some requests fail: the dashboard has something to show.
 */
import http from "node:http"

const role = process.argv[2] ?? ""
const port = Number(process.env.PORT)
const host = "127.0.0.1"

const upstream = (name: string) => ({
  host: process.env[`SHOP_${name}_SERVICE_HOST`] ?? host,
  port: Number(process.env[`SHOP_${name}_SERVICE_PORT`])
})

const traceOf = (req: http.IncomingMessage) => {
  const traceparent = typeof req.headers.traceparent === "string" ? req.headers.traceparent : undefined
  const correlation = req.headers["x-iii-correlation-id"]
  return {
    traceparent,
    traceId: traceparent?.split("-")[1],
    correlationId: typeof correlation === "string" ? correlation : undefined
  }
}
type Trace = ReturnType<typeof traceOf>

const log = (level: string, msg: string, trace: Trace, fields: Record<string, unknown> = {}) =>
  process.stdout.write(
    `${JSON.stringify({
      level,
      time: new Date().toISOString(),
      service: role,
      msg,
      ...(trace.traceId !== undefined && { traceId: trace.traceId }),
      ...(trace.correlationId !== undefined && { correlationId: trace.correlationId }),
      ...fields
    })}\n`
  )

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const between = (min: number, max: number) => min + Math.random() * (max - min)

/** Calls another service with the trace headers of the request being served. */
const call = (
  to: string,
  method: string,
  path: string,
  trace: Trace,
  body?: unknown
): Promise<{ status: number; body: unknown }> =>
  new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const headers: Record<string, string> = {
      ...(trace.traceparent !== undefined && { traceparent: trace.traceparent }),
      ...(trace.correlationId !== undefined && { "x-iii-correlation-id": trace.correlationId }),
      ...(payload !== undefined && {
        "content-type": "application/json",
        "content-length": String(Buffer.byteLength(payload))
      })
    }
    const req = http.request({ ...upstream(to), method, path, headers }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString()
        let parsed: unknown = text
        try {
          parsed = JSON.parse(text)
        } catch {}
        resolve({ status: res.statusCode ?? 0, body: parsed })
      })
    })
    req.on("error", reject)
    req.end(payload)
  })

const readBody = (req: http.IncomingMessage): Promise<unknown> =>
  new Promise((resolve) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString() || "null"))
      } catch {
        resolve(null)
      }
    })
  })

const send = (res: http.ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

const products = Array.from({ length: 60 }, (_, i) => ({
  id: i + 1,
  name: `${["Red", "Blue", "Green", "Black", "White"][i % 5]} ${["mug", "shirt", "cap", "sock", "bag", "pen"][i % 6]}`,
  priceCents: 500 + ((i * 379) % 4500)
}))

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, trace: Trace) => Promise<void>

const catalog: Handler = async (req, res, trace) => {
  const url = new URL(req.url ?? "/", "http://catalog")
  const id = /^\/products\/(\d+)$/.exec(url.pathname)?.[1]
  if (req.method === "GET" && url.pathname === "/products") {
    // The search is the slow route: a full scan, 120-400 ms.
    const took = between(120, 400)
    await sleep(took)
    if (took > 330) log("warn", `slow product search: ${Math.round(took)} ms`, trace)
    return send(res, 200, { products: products.slice(0, 12) })
  }
  if (req.method === "GET" && id !== undefined) {
    await sleep(between(3, 15))
    const product = products.find((p) => p.id === Number(id))
    if (product === undefined) return send(res, 404, { error: `no product ${id}` })
    return send(res, 200, product)
  }
  send(res, 404, { error: "not found" })
}

const payments: Handler = async (req, res, trace) => {
  if (req.method !== "POST" || req.url !== "/charges") return send(res, 404, { error: "not found" })
  const charge = (await readBody(req)) as { amountCents?: number } | null
  // The card processor: usually quick, sometimes slow, sometimes down.
  const roll = Math.random()
  await sleep(roll < 0.1 ? between(600, 900) : between(15, 50))
  if (roll > 0.9) {
    log("error", "charge declined: card processor timed out", trace, { amountCents: charge?.amountCents })
    return send(res, 502, { error: "card processor timed out" })
  }
  log("info", `charged ${charge?.amountCents ?? 0} cents`, trace)
  send(res, 201, { charged: charge?.amountCents ?? 0 })
}

const frontend: Handler = async (req, res, trace) => {
  const url = new URL(req.url ?? "/", "http://frontend")
  const id = /^\/products\/(\d+)$/.exec(url.pathname)?.[1]
  if (req.method === "GET" && url.pathname === "/health") return send(res, 200, { ok: true })
  if (req.method === "GET" && url.pathname === "/products") {
    const list = await call("CATALOG", "GET", "/products", trace)
    return send(res, list.status, list.body)
  }
  if (req.method === "GET" && id !== undefined) {
    const product = await call("CATALOG", "GET", `/products/${id}`, trace)
    return send(res, product.status, product.body)
  }
  if (req.method === "POST" && url.pathname === "/checkout") {
    const order = ((await readBody(req)) as { productId?: number } | null) ?? {}
    const product = await call("CATALOG", "GET", `/products/${order.productId ?? 0}`, trace)
    if (product.status !== 200) {
      log("warn", `checkout of unknown product ${order.productId}`, trace)
      return send(res, 404, { error: "no such product" })
    }
    const price = (product.body as { priceCents: number }).priceCents
    const charge = await call("PAYMENTS", "POST", "/charges", trace, { amountCents: price })
    if (charge.status !== 201) {
      log("error", `checkout failed: payment ${charge.status}`, trace, { productId: order.productId })
      return send(res, 502, { error: "payment failed" })
    }
    log("info", `order placed: product ${order.productId} for ${price} cents`, trace)
    return send(res, 201, { ordered: order.productId, priceCents: price })
  }
  send(res, 404, { error: "not found" })
}

const handlers: Record<string, Handler> = { frontend, catalog, payments }
const handler = handlers[role]
if (handler === undefined || !Number.isInteger(port)) {
  process.stderr.write("usage: PORT=N node DemoServices.js frontend|catalog|payments\n")
  process.exit(2)
}

http
  .createServer((req, res) => {
    const trace = traceOf(req)
    handler(req, res, trace).catch((error: unknown) => {
      log("error", `${req.method} ${req.url} failed: ${String(error)}`, trace)
      if (!res.headersSent) send(res, 500, { error: "internal error" })
    })
  })
  .listen(port, host, () =>
    log("info", `${role} listening on ${host}:${port}`, traceOf({ headers: {} } as http.IncomingMessage))
  )
process.on("SIGTERM", () => process.exit(0))
