// Writes the seed corpora in fuzz/seeds/ (committed; run again after a wire or parser change):
//   npm run build && node fuzz/make-seeds.mjs
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { parse } from "yaml"
import { WireProtocol } from "../packages/core/dist/index.js"

const seeds = (target, entries) => {
  const dir = new URL(`./seeds/${target}/`, import.meta.url)
  mkdirSync(dir, { recursive: true })
  for (const [name, bytes] of Object.entries(entries)) writeFileSync(new URL(name, dir), bytes)
  return dir
}

// wire: one frame of each type, and a batch carrying every kind of item.
const span = {
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  parentSpanId: "00f067aa0ba902b8",
  correlationId: "order-1234",
  service: "checkout",
  component: "api",
  composition: "shop",
  namespace: "default",
  pod: "checkout-1",
  kind: "server",
  name: "GET /cart/{id}",
  startTimeUnixNano: 1_767_225_600_000_000_000n,
  durationNano: 12_000_000,
  http: { method: "GET", route: "/cart/{id}", path: "/cart/7", statusCode: 200 },
  peerAddress: "10.0.0.7",
  peerPort: 43122,
  error: false,
  attributes: { "http.user_agent": "curl", retries: 2, cached: true }
}
const point = {
  name: "http.server.request.duration",
  kind: "distribution",
  service: "checkout",
  timeUnixNano: 1_767_225_600_000_000_000n,
  intervalNano: 10_000_000_000,
  value: 3,
  sketch: { count: 3, sum: 36, zeroCount: 0, offset: 240, counts: [1, 0, 2] }
}
const log = {
  timeUnixNano: 1_767_225_600_000_000_000n,
  service: "checkout",
  level: "error",
  body: "card declined",
  stream: "stderr",
  traceId: span.traceId,
  spanId: span.spanId,
  correlationId: "order-1234"
}
const encode = WireProtocol.encodeFrame
seeds("wire", {
  hello: encode({
    type: "hello",
    version: 1,
    agent: {
      id: "pod-uid-1",
      service: "checkout",
      pod: "p",
      node: "n",
      namespace: "default",
      version: "0.1.0"
    },
    token: "t"
  }),
  welcome: encode({ type: "welcome", version: 1, node: "obs-0", maxFrameBytes: 16 << 20 }),
  batch: encode({
    type: "batch",
    seq: 7,
    spans: [
      span,
      {
        ...span,
        spanId: "00f067aa0ba902b9",
        parentSpanId: undefined,
        kind: "client",
        http: undefined,
        attributes: undefined
      }
    ],
    metrics: [point, { ...point, kind: "gauge", sketch: undefined, value: 0.5 }],
    logs: [log]
  }),
  empty: encode({ type: "batch", seq: 1, spans: [], metrics: [], logs: [] }),
  ack: encode({ type: "ack", seq: 7 }),
  error: encode({
    type: "error",
    code: "invalid_batch",
    message: "spans[0].traceId: must not be all zeros",
    seq: 7,
    fatal: false
  })
})

// http: operations as fuzz/http.fuzz.mjs reads them: [op, time step, ...]. op & 3 = fd,
// (op >> 2) % 4 = 0 open / 1-2 data / 3 close, op & 16 = server, op & 32 = uncaptured follows,
// op & 64 = ingress.
const open = (fd, server) => [fd | (server ? 16 : 0), 1]
const data = (fd, ingress, text, uncaptured) => {
  const bytes = Buffer.from(text)
  const head = [fd | 4 | (ingress ? 64 : 0) | (uncaptured === undefined ? 0 : 32), 1, bytes.length, ...bytes]
  return uncaptured === undefined ? head : [...head, uncaptured]
}
const close = (fd) => [fd | 12, 1]
const ops = (...parts) => Buffer.from(parts.flat())
seeds("http", {
  "get-200": ops(
    open(0, true),
    data(
      0,
      true,
      "GET /cart/7 HTTP/1.1\r\nHost: shop\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
    ),
    data(0, false, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    close(0)
  ),
  chunked: ops(
    open(1, false),
    data(1, false, "POST /pay HTTP/1.1\r\nContent-Length: 3\r\nx-iii-correlation-id: order-1\r\n\r\nabc"),
    data(1, true, "HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n"),
    data(1, true, "0\r\n\r\n"),
    close(1)
  ),
  pipelined: ops(
    open(2, true),
    data(2, true, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n"),
    data(
      2,
      false,
      "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
    ),
    close(2)
  ),
  "uncaptured-body": ops(
    open(3, true),
    data(3, true, "PUT /upload HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", 1000),
    data(3, false, "HTTP/1.0 100 Continue\r\n\r\nHTTP/1.0 201 Created\r\n\r\nbody until close"),
    close(3)
  ),
  "no-open-upgrade": ops(
    data(0, true, "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    data(0, false, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
    close(0)
  )
})

// params: query strings and API paths as clients send them.
seeds(
  "params",
  Object.fromEntries(
    [
      "service=checkout&status=5xx&minDuration=200ms&since=1h&limit=20",
      "route=/cart/{id}&until=2026-01-01T10:00:00Z&cursor=abc",
      "window=5m&step=10s&route=/cart/{id}",
      "service=checkout&route=/pay&status=error&minDuration=1.5s&format=msgpack",
      "v1/traces?service=checkout&status=5xx&minDuration=200ms&since=1h&limit=20",
      "v1/traces/4bf92f3577b34da6a3ce929d0e0e4736",
      "v1/correlate/order-1234?limit=5",
      "v1/services",
      "v1/services/checkout/red?window=1h&step=1m&route=%2Fcart%2F%7Bid%7D",
      "apis/external.metrics.k8s.io/v1beta1/namespaces/default/iii_p99_latency_ms?labelSelector=app%3Dcheckout",
      "2026-01-01T10:00:00Z",
      "1767225600000",
      "1767225600000000000",
      "15m"
    ].map((text, i) => [`seed-${i}`, text])
  )
)

// composition: the example shipped with the manifests, and documents with typical mistakes.
const composition = seeds("composition", {
  "duplicate-names": `apiVersion: iii.io/v1
kind: ServiceComposition
metadata: { name: shop, namespace: default }
spec:
  components:
    - { name: api, image: "api:v1", replicas: { min: 3, max: 1 } }
    - { name: api, image: "api:v2", scalingPolicy: { metric: p99_latency, threshold: 150ms } }
`,
  "two-documents": `apiVersion: iii.io/v1
kind: ServiceComposition
metadata: { name: a }
spec: { components: [{ name: web, image: "web:1", ports: [{ port: 8080 }] }] }
---
apiVersion: iii.io/v1
kind: ServiceComposition
metadata: { name: b }
spec: { components: [{ name: worker, image: "w:1", env: [{ name: MODE, value: batch }] }], observability: { logs: info } }
`
})
const example = new URL("../manifests/examples/user-service.yaml", import.meta.url)
copyFileSync(example, new URL("user-service.yaml", composition))
// The same document as the controller receives it from the API server.
writeFileSync(new URL("user-service.json", composition), JSON.stringify(parse(readFileSync(example, "utf8"))))
