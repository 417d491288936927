// The `call` service of bench:agent-overhead: each request makes one call to an upstream (UPSTREAM_PORT,
// a bench-app.mjs outside the traced cgroup) over a keep-alive connection and answers with its body,
// so trace propagation has an outbound request per inbound one to give a traceparent.
// On SIGUSR2 it prints how many requests it has answered (`answered N`); on SIGHUP it drops its
// upstream connections (the kernel only propagates on connections made after the agent attached).
import http from "node:http"

let answered = 0
process.on("SIGUSR2", () => process.stdout.write(`answered ${answered}\n`))

const newAgent = () => new http.Agent({ keepAlive: true, maxSockets: 32 })
let upstream = newAgent()
process.on("SIGHUP", () => {
  upstream.destroy()
  upstream = newAgent()
})
const server = http.createServer((_req, res) => {
  http
    .get(
      { host: "127.0.0.1", port: Number(process.env.UPSTREAM_PORT), path: "/customer/42", agent: upstream },
      (up) => {
        const chunks = []
        up.on("data", (chunk) => chunks.push(chunk))
        up.on("end", () => {
          answered++
          const body = Buffer.concat(chunks)
          res.writeHead(200, { "content-type": "application/json", "content-length": body.length }).end(body)
        })
      }
    )
    .on("error", (error) => res.writeHead(502).end(String(error)))
})
server.keepAliveTimeout = 65_000
server.listen(Number(process.env.PORT), "127.0.0.1", () => process.stdout.write("listening\n"))
