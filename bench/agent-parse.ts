/**
 * Agent hot path: HTTP requests/s through per-connection reassembly + HTTP/1.x parsing, on one core,
 * from a capture of realistic traffic.
 *
 *   npm run bench:agent-parse     (builds packages/agent, then runs this with Node 24)
 *
 * The capture is generated with a fixed seed as the kernel would report it: accept, one event per
 * read/write (payload truncated at 4 KiB, `totalLength` the full size), close. Mix: browser-like GETs
 * with ~10 headers, JSON POSTs, JSON responses of 0.2–3 KB, 10% chunked responses, 5% large downloads
 * (64 KB–1 MB, mostly uncaptured), 10% pipelined connections, 5% of messages split across two reads,
 * 1–20 requests per keep-alive connection. Two figures: reassembly + parsing alone (the target,
 * ≥ 50,000 requests/s), and the whole EventProcessor (spans, routes, RED sketches) with a null sink.
 * Median of 7 rounds.
 */
import type { CaptureEvent, Syscall } from "@iii/agent/CaptureEvent"
import { ConnectionTracker } from "../packages/agent/dist/internal/ConnectionTracker.js"
import { EventProcessor } from "../packages/agent/dist/internal/EventProcessor.js"
import { prng } from "../packages/core/test/fixtures/prng.ts"

const PAYLOAD = 4096
const CONNECTIONS = 4000
const ROUNDS = 7

const random = prng(42).next
const int = (min: number, max: number) => min + Math.floor(random() * (max - min + 1))

const userAgent =
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
const requestHead = (method: string, path: string, bodyLength: number) =>
  [
    `${method} ${path} HTTP/1.1`,
    "Host: shop.internal:8080",
    `User-Agent: ${userAgent}`,
    "Accept: application/json, text/plain, */*",
    "Accept-Encoding: gzip, deflate, br",
    "Accept-Language: en-US,en;q=0.9",
    `Cookie: session=${random().toString(36).slice(2)}${random().toString(36).slice(2)}; theme=dark`,
    `traceparent: 00-${"4bf92f3577b34da6a3ce929d0e0e4736"}-${"00f067aa0ba902b7"}-01`,
    `X-Request-Id: ${random().toString(16).slice(2, 14)}`,
    ...(bodyLength > 0 ? ["Content-Type: application/json", `Content-Length: ${bodyLength}`] : []),
    "Connection: keep-alive",
    "",
    ""
  ].join("\r\n")

const json = (size: number) => `{"data":"${"x".repeat(Math.max(0, size - 11))}"}`

const responseBytes = (
  kind: "json" | "chunked" | "large",
  size: number
): { head: string; body: string; total: number } => {
  const common = "Date: Thu, 26 Nov 2026 08:00:00 GMT\r\nServer: node\r\nX-Powered-By: Express\r\n"
  if (kind === "chunked") {
    const chunks = Array.from({ length: int(2, 5) }, () => json(int(100, 800)))
    const body = `${chunks.map((c) => `${c.length.toString(16)}\r\n${c}\r\n`).join("")}0\r\n\r\n`
    const head = `HTTP/1.1 200 OK\r\n${common}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`
    return { head, body, total: head.length + body.length }
  }
  const head = `HTTP/1.1 200 OK\r\n${common}Content-Type: application/${kind === "large" ? "octet-stream" : "json"}\r\nContent-Length: ${size}\r\n\r\n`
  // Large bodies are never materialised: only their captured prefix exists, like in the kernel's copy.
  const body = kind === "large" ? "z".repeat(Math.min(size, PAYLOAD)) : json(size)
  return { head, body, total: head.length + size }
}

const events: Array<CaptureEvent> = []
let requests = 0
let t = 1_700_000_000_000_000_000n
const tick = () => {
  t += 20_000n
  return t
}
const pid = 4242
const push = (fd: number, direction: "ingress" | "egress", text: string, total = text.length) => {
  const payload = Buffer.from(text.length > PAYLOAD ? text.slice(0, PAYLOAD) : text, "latin1")
  const read = (syscall: Syscall, totalLength: number, bytes: Buffer) =>
    events.push({
      kind: "data",
      timestampNs: tick(),
      target: 1,
      pid,
      tid: pid,
      fd,
      direction,
      syscall,
      totalLength,
      payload: bytes
    })
  // 5% of messages arrive split over two reads.
  if (random() < 0.05 && payload.length > 10 && total === text.length) {
    const at = int(1, payload.length - 1)
    read("read", at, payload.subarray(0, at))
    read("read", total - at, payload.subarray(at))
    return
  }
  read(direction === "ingress" ? "read" : "write", total, payload)
}

for (let c = 0; c < CONNECTIONS; c++) {
  const fd = 10 + (c % 500)
  events.push({
    kind: "open",
    timestampNs: tick(),
    target: 1,
    pid,
    tid: pid,
    fd,
    family: 4,
    localAddress: "10.0.0.2",
    localPort: 8080,
    peerAddress: `10.0.${c % 7}.${c % 250}`,
    peerPort: 30000 + c
  })
  const pipelinedConnection = random() < 0.1
  const count = int(1, 20)
  for (let r = 0; r < count; ) {
    const batch = pipelinedConnection ? Math.min(3, count - r) : 1
    let requestText = ""
    const answers: Array<ReturnType<typeof responseBytes>> = []
    for (let b = 0; b < batch; b++) {
      const post = random() < 0.2
      const body = post ? json(int(300, 800)) : ""
      requestText +=
        requestHead(
          post ? "POST" : "GET",
          post ? "/api/v1/orders" : `/api/v1/users/${int(1, 99999)}?include=profile`,
          body.length
        ) + body
      const roll = random()
      answers.push(
        roll < 0.05
          ? responseBytes("large", int(65_536, 1_000_000))
          : roll < 0.15
            ? responseBytes("chunked", 0)
            : responseBytes("json", int(200, 3000))
      )
    }
    push(fd, "ingress", requestText)
    for (const answer of answers) {
      const text = answer.head + answer.body
      push(fd, "egress", text, answer.total)
    }
    requests += batch
    r += batch
  }
  events.push({ kind: "close", timestampNs: tick(), target: 1, pid, tid: pid, fd })
}

const captureBytes = events.reduce((sum, e) => sum + (e.kind === "data" ? e.payload.byteLength : 0), 0)
console.log(
  `capture: ${events.length} events, ${requests} requests on ${CONNECTIONS} connections, ${(captureBytes / 1e6).toFixed(1)} MB captured payload`
)

const median = (values: Array<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? 0
}

const reassembly = () => {
  let exchanges = 0
  const tracker = new ConnectionTracker<undefined>({
    onRequest: () => {},
    onExchange: () => {
      exchanges++
    },
    onConnectionEnd: () => {},
    onDropped: () => {}
  })
  const started = process.hrtime.bigint()
  for (const e of events) {
    if (e.kind === "data")
      tracker.data(e.pid, e.tid, e.fd, e.direction, e.payload, e.totalLength, e.timestampNs)
    else if (e.kind === "open") {
      tracker.open(e.pid, e.fd, undefined, e.timestampNs, undefined, {
        address: e.peerAddress ?? "",
        port: e.peerPort ?? 0
      })
    } else if (e.kind === "close") tracker.close(e.pid, e.fd, e.timestampNs)
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  if (exchanges !== requests) throw new Error(`parsed ${exchanges} exchanges, expected ${requests}`)
  return requests / seconds
}

const pipeline = () => {
  let spans = 0
  const processor = new EventProcessor(
    { identity: { service: "shop" } },
    {
      span: () => {
        spans++
      },
      log: () => {}
    },
    t
  )
  const started = process.hrtime.bigint()
  processor.process(events)
  processor.flushMetrics(t)
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  if (spans !== requests) throw new Error(`made ${spans} spans, expected ${requests}`)
  return requests / seconds
}

// Warm-up, then interleaved rounds.
reassembly()
pipeline()
const parse: Array<number> = []
const full: Array<number> = []
for (let round = 0; round < ROUNDS; round++) {
  parse.push(reassembly())
  full.push(pipeline())
}
const fmt = (n: number) => Math.round(n).toLocaleString("en-US")
console.log(
  `reassembly + HTTP parsing:          ${fmt(median(parse))} requests/s (median of ${ROUNDS}; target ≥ 50,000)`
)
console.log(`full EventProcessor (spans + RED):  ${fmt(median(full))} requests/s (median of ${ROUNDS})`)
