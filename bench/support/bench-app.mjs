// The service bench:agent-overhead loads: a small JSON endpoint, as typical as a Node.js API gets.
// On SIGUSR2 it prints how many requests it has answered (`answered N`), the bench's ground truth
// for the agent's accounting.
import http from "node:http"

let answered = 0
process.on("SIGUSR2", () => process.stdout.write(`answered ${answered}\n`))

const server = http.createServer((req, res) => {
  answered++
  const body = JSON.stringify({
    id: req.url?.split("/").pop(),
    name: "Ada Lovelace",
    roles: ["admin", "dev"]
  })
  res
    .writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
    .end(body)
})
server.keepAliveTimeout = 65_000
server.listen(Number(process.env.PORT), "127.0.0.1", () => process.stdout.write("listening\n"))
