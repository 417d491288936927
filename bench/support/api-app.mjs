// The `api` workload of bench:agent-overhead: a Node.js service whose requests do some work, as an
// API does (issue #12: ~50-100 µs of CPU and a ~4 KB JSON answer per request): each request looks a
// customer up in an in-memory table, gathers their recent orders, totals them and serialises the
// answer. On SIGUSR2 it prints how many requests it has answered (`answered N`).
import http from "node:http"

let answered = 0
process.on("SIGUSR2", () => process.stdout.write(`answered ${answered}\n`))

const products = Array.from({ length: 500 }, (_, i) => ({
  sku: `SKU-${String(i).padStart(5, "0")}`,
  name: `Product ${i}`,
  price: Math.round((5 + ((i * 37) % 200)) * 100) / 100
}))
const customers = Array.from({ length: 1000 }, (_, i) => ({
  id: i,
  name: `Customer ${i}`,
  email: `customer${i}@example.test`,
  tier: ["bronze", "silver", "gold"][i % 3],
  orders: Array.from({ length: 40 }, (_, j) => ({
    id: i * 100 + j,
    day: `2026-11-${String((j % 28) + 1).padStart(2, "0")}`,
    lines: Array.from({ length: 3 }, (_, k) => ({
      product: products[(i * 7 + j * 3 + k) % products.length],
      quantity: 1 + ((i + j + k) % 4)
    }))
  }))
}))

const server = http.createServer((req, res) => {
  answered++
  const id = Number(req.url?.split("/").pop()) % customers.length || 0
  const customer = customers[id]
  const recent = customer.orders
    .filter((order) => order.day >= "2026-11-10")
    .slice(0, 18)
    .map((order) => {
      const total = order.lines.reduce((sum, line) => sum + line.product.price * line.quantity, 0)
      return {
        id: order.id,
        day: order.day,
        total: Math.round(total * 100) / 100,
        lines: order.lines.map((line) => ({
          sku: line.product.sku,
          name: line.product.name,
          quantity: line.quantity
        }))
      }
    })
  const body = JSON.stringify({
    id: customer.id,
    name: customer.name,
    email: customer.email,
    tier: customer.tier,
    spent: Math.round(recent.reduce((sum, order) => sum + order.total, 0) * 100) / 100,
    recent
  })
  res
    .writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
    .end(body)
})
server.keepAliveTimeout = 65_000
server.listen(Number(process.env.PORT), "127.0.0.1", () => process.stdout.write("listening\n"))
