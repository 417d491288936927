import * as http from "node:http"
import type { AddressInfo } from "node:net"
import type { Telemetry } from "@iii/core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Recorder } from "../src/internal/Recorder.js"
import * as ProxyMode from "../src/ProxyMode.js"

/** The upstream app: answers every request with the headers it received (raw, so repeats show). */
let upstream: http.Server
let proxy: Awaited<ReturnType<typeof ProxyMode.start>>
const spans: Array<Telemetry.Span> = []

const request = (path: string, headers: ReadonlyArray<[string, string]> = [], method = "GET") =>
  new Promise<{ status: number; received: Array<[string, string]>; body: string }>((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port: proxy.listening.port,
        path,
        method,
        // Raw (array) headers let a test repeat one; Node then adds no Host itself.
        headers: ["Host", "app.test", ...headers.flat()],
        agent: false
      },
      (res) => {
        let body = ""
        res.on("data", (chunk) => {
          body += chunk
        })
        res.on("end", () => {
          let received: Array<[string, string]> = []
          try {
            received = JSON.parse(body)
          } catch {}
          resolve({ status: res.statusCode ?? 0, received, body })
        })
      }
    )
    req.on("error", reject)
    req.end()
  })

/** A proxy of its own in front of the same upstream, to be closed by the test. */
const closingProxy = async () => {
  const seen: Array<Telemetry.Span> = []
  const recorder = new Recorder({ service: "closing" }, { span: (s) => seen.push(s) }, 0n)
  const closing = await ProxyMode.start(
    {
      listen: { host: "127.0.0.1", port: 0 },
      upstream: { host: "127.0.0.1", port: (upstream.address() as AddressInfo).port }
    },
    recorder
  )
  return { closing, seen }
}

const valuesOf = (received: Array<[string, string]>, name: string) =>
  received.filter(([key]) => key.toLowerCase() === name).map(([, value]) => value)

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    const pairs: Array<[string, string]> = []
    for (let i = 0; i < req.rawHeaders.length; i += 2)
      pairs.push([req.rawHeaders[i] ?? "", req.rawHeaders[i + 1] ?? ""])
    if (req.url === "/fail") {
      res.socket?.destroy()
      return
    }
    if (req.url === "/slow") {
      setTimeout(() => res.end("slow"), 300)
      return
    }
    res.writeHead(req.url === "/missing" ? 404 : 200, { "content-type": "application/json" })
    res.end(JSON.stringify(pairs))
  })
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve))
  const recorder = new Recorder({ service: "proxied" }, { span: (s) => spans.push(s) }, 0n)
  proxy = await ProxyMode.start(
    {
      listen: { host: "127.0.0.1", port: 0 },
      upstream: { host: "127.0.0.1", port: (upstream.address() as AddressInfo).port }
    },
    recorder
  )
})

afterAll(async () => {
  await proxy.close(0)
  await new Promise<void>((resolve) => upstream.close(() => resolve()))
})

describe("ProxyMode", () => {
  it("parses HOST:PORT", () => {
    expect(ProxyMode.parseHostPort("127.0.0.1:8080")).toEqual({ host: "127.0.0.1", port: 8080 })
    expect(ProxyMode.parseHostPort(":80")).toEqual({ host: "0.0.0.0", port: 80 })
    expect(ProxyMode.parseHostPort("[::1]:9000")).toEqual({ host: "::1", port: 9000 })
    expect(ProxyMode.parseHostPort("nohost")).toBeUndefined()
    expect(ProxyMode.parseHostPort("h:70000")).toBeUndefined()
  })

  it("continues a valid traceparent with a new parent id and keeps the sampled flag and tracestate", async () => {
    spans.length = 0
    const incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    const { received } = await request("/users/5", [
      ["traceparent", incoming],
      ["tracestate", "vendor=abc"]
    ])
    const [traceparent, ...others] = valuesOf(received, "traceparent")
    expect(others).toEqual([])
    const span = spans[0]
    expect(traceparent).toBe(`00-0af7651916cd43dd8448eb211c80319c-${span?.spanId}-01`)
    expect(valuesOf(received, "tracestate")).toEqual(["vendor=abc"])
    expect(valuesOf(received, "x-iii-correlation-id")).toEqual(["0af7651916cd43dd8448eb211c80319c"])
    expect(span).toMatchObject({
      kind: "server",
      name: "GET /users/{id}",
      traceId: "0af7651916cd43dd8448eb211c80319c",
      parentSpanId: "b7ad6b7169203331",
      http: { statusCode: 200, path: "/users/5" },
      peerAddress: "127.0.0.1"
    })
  })

  it("keeps an unsampled flag unsampled", async () => {
    const { received } = await request("/", [
      ["traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"]
    ])
    expect(valuesOf(received, "traceparent")[0]).toMatch(/-00$/)
  })

  it.each([
    ["malformed", [["traceparent", "00-xyz-b7ad6b7169203331-01"]]],
    ["all-zero trace id", [["traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01"]]],
    ["uppercase", [["traceparent", "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"]]],
    [
      "repeated",
      [
        ["traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
        ["traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203332-01"]
      ]
    ],
    ["absent", []]
  ] as Array<[string, Array<[string, string]>]>)(
    "replaces a %s traceparent with a new trace and drops tracestate",
    async (_, headers) => {
      spans.length = 0
      const { received } = await request("/x", [...headers, ["tracestate", "vendor=abc"]])
      const values = valuesOf(received, "traceparent")
      expect(values).toHaveLength(1)
      const span = spans[0]
      expect(span?.traceId).not.toBe("0af7651916cd43dd8448eb211c80319c")
      expect(span?.parentSpanId).toBeUndefined()
      expect(values[0]).toBe(`00-${span?.traceId}-${span?.spanId}-03`)
      expect(valuesOf(received, "tracestate")).toEqual([])
      expect(valuesOf(received, "x-iii-correlation-id")).toEqual([span?.traceId])
    }
  )

  it("keeps a valid x-iii-correlation-id and uses it for the span", async () => {
    spans.length = 0
    const { received } = await request("/", [["X-IIi-Correlation-Id", "order-77"]])
    expect(valuesOf(received, "x-iii-correlation-id")).toEqual(["order-77"])
    expect(spans[0]?.correlationId).toBe("order-77")
  })

  it("removes hop-by-hop headers and records 4xx without marking server spans as errors", async () => {
    spans.length = 0
    const { status, received } = await request("/missing", [
      ["Connection", "keep-alive, X-Private"],
      ["X-Private", "secret"],
      ["X-Kept", "1"]
    ])
    expect(status).toBe(404)
    expect(valuesOf(received, "x-private")).toEqual([])
    expect(valuesOf(received, "x-kept")).toEqual(["1"])
    expect(spans[0]).toMatchObject({ http: { statusCode: 404 }, error: false })
  })

  it("answers 502 when the upstream fails, recorded as an error", async () => {
    spans.length = 0
    const { status } = await request("/fail")
    expect(status).toBe(502)
    expect(spans[0]).toMatchObject({ http: { statusCode: 502 }, error: true })
  })

  it("on close lets a request under way finish (its span complete) and stops accepting", async () => {
    const { closing, seen } = await closingProxy()
    const answer = fetch(`http://127.0.0.1:${closing.listening.port}/slow`).then((res) => res.text())
    await new Promise((resolve) => setTimeout(resolve, 100))
    await closing.close(5000)
    expect(await answer).toBe("slow")
    expect(seen.map((span) => [span.http?.path, span.http?.statusCode, span.attributes])).toEqual([
      ["/slow", 200, undefined]
    ])
    await expect(fetch(`http://127.0.0.1:${closing.listening.port}/late`)).rejects.toThrow()
  })

  it("on close cuts what is still under way after the grace period, a no_response span each", async () => {
    const { closing, seen } = await closingProxy()
    const answer = fetch(`http://127.0.0.1:${closing.listening.port}/slow`).then(
      (res) => res.text(),
      () => "cut"
    )
    await new Promise((resolve) => setTimeout(resolve, 100))
    await closing.close(0)
    expect(seen.map((span) => [span.http?.path, span.attributes?.["iii.outcome"]])).toEqual([
      ["/slow", "no_response"]
    ])
    expect(await answer).toBe("cut")
  })
})
