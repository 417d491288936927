/**
 * OTLP/HTTP ingest refusing bad requests: each is answered with the status the OTLP specification
 * gives it, and nothing of it is stored. Also back-pressure (429 with Retry-After) and metric points.
 */
import { request } from "node:http"
import { createGunzip, gzipSync } from "node:zlib"
import { Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { getJson, type RunningNode, startNode } from "./fixtures/Node.js"
import { gzip, post, sdkTracer, traceBody } from "./fixtures/Otlp.js"

const token = "otlp-bad-input-token"
const auth = { authorization: `Bearer ${token}` }
const protobufHeaders = { ...auth, "content-type": "application/x-protobuf" }
const jsonHeaders = { ...auth, "content-type": "application/json" }
const maxBodyBytes = 256 * 1024

/** A series' value from the node's /metrics (`name` with its labels, as the text shows them). */
const counter = async (url: string, series: string) => {
  const text = await (await fetch(`${url}/metrics`)).text()
  const escaped = series.replace(/[{}"|]/g, (c) => `\\${c}`)
  return Number(new RegExp(`^${escaped} (\\d+)$`, "m").exec(text)?.[1] ?? Number.NaN)
}

/** A body of gzip members of zeros: ~1,000 times smaller than what it inflates to. */
const gzipBomb = (members: number, memberBytes: number) => {
  const member = gzipSync(Buffer.alloc(memberBytes), { level: 9 })
  return Buffer.concat(Array.from({ length: members }, () => member))
}

/** Milliseconds it takes to inflate `body` whole (counting bytes, keeping none). */
const inflateWholeMs = (body: Buffer) =>
  new Promise<number>((resolve, reject) => {
    const started = performance.now()
    const gunzip = createGunzip()
    gunzip.on("data", () => undefined)
    gunzip.on("end", () => resolve(performance.now() - started))
    gunzip.on("error", reject)
    gunzip.end(body)
  })

/** POSTs `chunks` with chunked transfer encoding (no Content-Length); the answer's status. */
const postChunked = (url: string, chunks: ReadonlyArray<Buffer>, headers: Record<string, string>) =>
  new Promise<number>((resolve, reject) => {
    const req = request(url, { method: "POST", headers }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on("error", (e) =>
      e.message.includes("EPIPE") || e.message.includes("ECONNRESET") ? undefined : reject(e)
    )
    for (const chunk of chunks) req.write(chunk)
    req.end()
  })

describe("OTLP/HTTP bad input", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode({ token: Option.some(Redacted.make(token)), maxFrameBytes: maxBodyBytes })
  })
  afterAll(() => node.stop())

  const stored = () => counter(node.url, "iii_obs_spans_ingested_total")
  const traceStatus = async (traceId: string) =>
    (await getJson(`${node.url}/v1/traces/${traceId}`, auth)).status

  it("refuses every bad request with its status and stores nothing of any", async () => {
    const sdk = sdkTracer()
    const probe = sdk.tracer.startSpan("must not be stored")
    probe.end()
    const good = traceBody(await sdk.finished())
    const before = await stored()
    const url = `${node.url}/v1/traces`

    // Undecodable bodies: 400, with a google.rpc.Status in the request's format.
    const garbage = await post(url, Buffer.from("not protobuf at all"), protobufHeaders)
    expect(garbage.status).toBe(400)
    expect(garbage.headers.get("content-type")).toBe("application/x-protobuf")
    expect(Buffer.from(garbage.body).toString("latin1")).toMatch(/not a protobuf export request/)
    expect(
      (await post(url, Buffer.concat([good, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f])]), protobufHeaders))
        .status
    ).toBe(400)
    const badJson = await post(url, "{not json", jsonHeaders)
    expect(badJson.status).toBe(400)
    expect(JSON.parse(Buffer.from(badJson.body).toString())).toMatchObject({
      code: 3,
      message: expect.stringMatching(/not an OTLP\/JSON export request/)
    })
    const badId = JSON.stringify({
      resourceSpans: [
        { scopeSpans: [{ spans: [{ traceId: "not-hex", spanId: "eee19b7ec3c1b174", name: "x" }] }] }
      ]
    })
    expect((await post(url, badId, jsonHeaders)).status).toBe(400)
    expect((await post(url, "[]", jsonHeaders)).status).toBe(400)
    expect((await post(url, JSON.stringify({ resourceSpans: 3 }), jsonHeaders)).status).toBe(400)
    expect(
      (await post(url, Buffer.from("not gzip"), { ...protobufHeaders, "content-encoding": "gzip" })).status
    ).toBe(400)

    // Wrong types: 415.
    expect((await post(url, good, { ...auth, "content-type": "text/plain" })).status).toBe(415)
    expect((await post(url, good, auth)).status).toBe(415)
    expect((await post(url, good, { ...protobufHeaders, "content-encoding": "br" })).status).toBe(415)

    // No token, or the wrong one: 401.
    expect((await post(url, good, { "content-type": "application/x-protobuf" })).status).toBe(401)
    expect(
      (await post(url, good, { "content-type": "application/x-protobuf", authorization: "Bearer nope" }))
        .status
    ).toBe(401)

    // Over the size limit: 413, declared or not, plain or inflated.
    const big = Buffer.concat([good, Buffer.alloc(maxBodyBytes)])
    expect((await post(url, big, protobufHeaders)).status).toBe(413)
    const chunks = Array.from({ length: 8 }, () => Buffer.alloc(maxBodyBytes / 4))
    expect(await postChunked(url, chunks, protobufHeaders)).toBe(413)
    const inflatesPast = gzip(Buffer.concat([good, Buffer.alloc(maxBodyBytes)]))
    expect(inflatesPast.length).toBeLessThan(maxBodyBytes)
    expect((await post(url, inflatesPast, { ...protobufHeaders, "content-encoding": "gzip" })).status).toBe(
      413
    )

    expect(await traceStatus(probe.spanContext().traceId)).toBe(404)
    expect(await stored()).toBe(before)
    const answered = (status: number) =>
      counter(node.url, `iii_obs_otlp_requests_total{signal="traces",status="${status}"}`)
    expect([await answered(400), await answered(415), await answered(401), await answered(413)]).toEqual([
      7, 3, 2, 3
    ])
    // The good body itself is fine: the node was refusing the requests, not the spans.
    expect((await post(url, good, protobufHeaders)).status).toBe(200)
    expect(await traceStatus(probe.spanContext().traceId)).toBe(200)
    await sdk.shutdown()
  })

  it("refuses a gzip bomb after inflating no more than the limit", async () => {
    // ~240 KB that inflate to 240 MiB.
    const bomb = gzipBomb(4, 60 * 1024 * 1024)
    expect(bomb.length).toBeLessThan(maxBodyBytes)
    const whole = await inflateWholeMs(bomb)
    const started = performance.now()
    const answer = await post(`${node.url}/v1/traces`, bomb, {
      ...protobufHeaders,
      "content-encoding": "gzip"
    })
    const took = performance.now() - started
    expect(answer.status).toBe(413)
    expect(Buffer.from(answer.body).toString("latin1")).toMatch(/larger than this node takes/)
    // Inflating it whole takes ~1,000 times longer than inflating 256 KiB of it.
    expect(took).toBeLessThan(whole / 2)
  })

  it("stores gauges, sums and histograms, and reports the point kinds it does not store as rejected", async () => {
    const now = BigInt(Date.now()) * 1_000_000n
    const point = (value: Record<string, unknown>) => ({
      startTimeUnixNano: `${now - 10_000_000_000n}`,
      timeUnixNano: `${now}`,
      attributes: [{ key: "route", value: { stringValue: "/pay" } }],
      ...value
    })
    const body = JSON.stringify({
      resourceMetrics: [
        {
          resource: { attributes: [{ key: "service.name", value: { stringValue: "payments" } }] },
          scopeMetrics: [
            {
              metrics: [
                { name: "queue.depth", gauge: { dataPoints: [point({ asInt: "7" })] } },
                {
                  name: "requests",
                  sum: { aggregationTemporality: 1, isMonotonic: true, dataPoints: [point({ asDouble: 3 })] }
                },
                {
                  name: "latency",
                  histogram: {
                    aggregationTemporality: 2,
                    dataPoints: [
                      point({ count: "4", sum: 1.5, bucketCounts: ["1", "3"], explicitBounds: [0.1] })
                    ]
                  }
                },
                {
                  name: "old.style",
                  summary: { dataPoints: [point({ count: "2", sum: 3 }), point({ count: "1", sum: 1 })] }
                }
              ]
            }
          ]
        }
      ]
    })
    const before = await counter(node.url, "iii_obs_metric_points_ingested_total")
    const answer = await post(`${node.url}/v1/metrics`, body, jsonHeaders)
    expect(answer.status).toBe(200)
    expect(JSON.parse(Buffer.from(answer.body).toString())).toMatchObject({
      partialSuccess: { rejectedDataPoints: "2", errorMessage: expect.stringMatching(/old.style: .*summary/) }
    })
    expect(await counter(node.url, "iii_obs_metric_points_ingested_total")).toBe(before + 3)
    // A retry stores nothing more.
    expect((await post(`${node.url}/v1/metrics`, body, jsonHeaders)).status).toBe(200)
    expect(await counter(node.url, "iii_obs_metric_points_ingested_total")).toBe(before + 3)
    expect(await counter(node.url, 'iii_obs_otlp_items_rejected_total{signal="metrics"}')).toBe(4)
  })
})

describe("OTLP/HTTP back-pressure", () => {
  it("answers 429 with Retry-After while the write queue is full, and stores what it accepted", async () => {
    const node = await startNode({ maxQueuedSpans: 1 })
    try {
      const requests = await Promise.all(
        Array.from({ length: 40 }, async () => {
          const sdk = sdkTracer()
          const s = sdk.tracer.startSpan("burst")
          s.end()
          const body = traceBody(await sdk.finished())
          await sdk.shutdown()
          const answer = await post(`${node.url}/v1/traces`, body, {
            "content-type": "application/x-protobuf"
          })
          return { traceId: s.spanContext().traceId, answer }
        })
      )
      const refused = requests.filter((r) => r.answer.status === 429)
      expect(refused.length).toBeGreaterThan(0)
      expect(refused[0]?.answer.headers.get("retry-after")).toBe("1")
      for (const { traceId, answer } of requests) {
        expect([200, 429]).toContain(answer.status)
        const status = (await getJson(`${node.url}/v1/traces/${traceId}`)).status
        expect(status).toBe(answer.status === 200 ? 200 : 404)
      }
    } finally {
      await node.stop()
    }
  })
})
