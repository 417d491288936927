/**
 * The small service `iii demo` traces: a "shop" front end that calls its "inventory" back end over
 * HTTP and logs a JSON line per order. Plain Node.js with no iii code in it, as any traced app is.
 *
 *   node DemoShop.js FRONT_PORT BACK_PORT
 */
import http from "node:http"

const [frontPort, backPort] = process.argv.slice(2).map(Number)
const host = "127.0.0.1"

const log = (level: string, msg: string, fields: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ level, time: new Date().toISOString(), msg, ...fields })}\n`)

const inventory = http.createServer((req, res) => {
  const sku = /^\/stock\/([\w-]+)$/.exec(req.url ?? "")?.[1]
  // A little latency, so the RED percentiles have a shape.
  setTimeout(
    () => {
      if (sku === undefined) {
        res.writeHead(404).end()
        return
      }
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ sku, inStock: 7 }))
    },
    2 + Math.random() * 18
  )
})

// No trace headers are passed on: the agent links this call to the request being served.
const stockOf = (sku: string) =>
  new Promise<number>((resolve, reject) => {
    http
      .get({ host, port: backPort, path: `/stock/${sku}` }, (res) => {
        res.resume()
        res.on("end", () => resolve(res.statusCode ?? 0))
      })
      .on("error", reject)
  })

const front = http.createServer(async (req, res) => {
  const correlationId = req.headers["x-iii-correlation-id"]
  const id = typeof correlationId === "string" ? correlationId : undefined
  const order = /^\/orders\/(\d+)(\?fail)?$/.exec(req.url ?? "")
  if (order === null) {
    res.writeHead(404).end("not found\n")
    return
  }
  try {
    const status = await stockOf(`sku-${order[1]}`)
    if (order[2] !== undefined) throw new Error("payment service unavailable")
    // Only requests with a correlation id log on success: the demo's terminal stays readable.
    if (id !== undefined) log("info", `order ${order[1]} placed`, { correlationId: id, stock: status })
    res.writeHead(200, { "content-type": "application/json" }).end(`{"order":${order[1]}}\n`)
  } catch (error) {
    log("error", `order ${order[1]} failed: ${(error as Error).message}`, { correlationId: id })
    res.writeHead(500).end("failed\n")
  }
})

inventory.listen(backPort, host, () => front.listen(frontPort, host, () => log("info", "shop is up")))
process.on("SIGTERM", () => process.exit(0))
