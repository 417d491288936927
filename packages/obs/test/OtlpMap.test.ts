/** The OTLP decoding and mapping, pure: OTLP/JSON requests (the form whose quirks need handling) in, iii's model out. */
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { mapLogs, mapMetrics, mapTraces } from "../src/internal/otlp/OtlpMap.js"
import * as Proto from "../src/internal/otlp/OtlpProto.js"

const decode = <S extends Proto.Signal>(signal: S, value: unknown): Proto.Requests[S] => {
  const decoded = Proto.decodeRequest(signal, "json", Buffer.from(JSON.stringify(value)))
  if (Either.isLeft(decoded)) throw new Error(decoded.left)
  return decoded.right
}

const traceId = "5b8efff798038103d269b633813fc60c"
const spans = (list: ReadonlyArray<Record<string, unknown>>, resource: ReadonlyArray<unknown> = []) =>
  mapTraces(
    decode("traces", {
      resourceSpans: [{ resource: { attributes: resource }, scopeSpans: [{ spans: list }] }]
    })
  )

describe("OTLP/JSON traces", () => {
  it("reads hex ids, 64-bit times as strings or numbers, and kinds as numbers or names", () => {
    const m = spans([
      {
        traceId,
        spanId: "eee19b7ec3c1b174",
        name: "a",
        kind: "SPAN_KIND_CONSUMER",
        startTimeUnixNano: "1767225600000000000",
        endTimeUnixNano: "1767225600000001000"
      },
      {
        traceId,
        spanId: "eee19b7ec3c1b175",
        parentSpanId: "eee19b7ec3c1b174",
        name: "b",
        kind: 3,
        startTimeUnixNano: 1000,
        endTimeUnixNano: 1500
      }
    ])
    expect(m.rejections.count).toBe(0)
    expect(m.items).toMatchObject([
      {
        traceId,
        spanId: "eee19b7ec3c1b174",
        kind: "consumer",
        startTimeUnixNano: 1767225600000000000n,
        durationNano: 1000,
        service: "unknown_service"
      },
      { spanId: "eee19b7ec3c1b175", parentSpanId: "eee19b7ec3c1b174", kind: "client", durationNano: 500 }
    ])
    expect(m.items[0]?.parentSpanId).toBeUndefined()
  })

  it("keeps every attribute value in a form the model holds", () => {
    const m = spans([
      {
        traceId,
        spanId: "eee19b7ec3c1b174",
        name: "x",
        attributes: [
          { key: "big", value: { intValue: "9007199254740993" } },
          { key: "small", value: { intValue: "42" } },
          { key: "negative", value: { intValue: "-7" } },
          { key: "most negative", value: { intValue: "-9223372036854775808" } },
          { key: "ratio", value: { doubleValue: 0.5 } },
          { key: "raw", value: { bytesValue: Buffer.from("hi").toString("base64") } },
          { key: "list", value: { arrayValue: { values: [{ stringValue: "a" }, { intValue: 1 }] } } },
          { key: "map", value: { kvlistValue: { values: [{ key: "k", value: { boolValue: false } }] } } },
          { key: "__proto__", value: { stringValue: "kept aside" } },
          { key: "empty", value: {} }
        ]
      }
    ]).items[0]
    expect(m?.attributes).toEqual({
      big: "9007199254740993",
      small: 42,
      negative: -7,
      "most negative": "-9223372036854775808",
      ratio: 0.5,
      raw: "aGk=",
      list: '["a",1]',
      map: '{"k":false}',
      __proto_: "kept aside"
    })
    expect(Object.getPrototypeOf(m?.attributes)).toBe(Object.prototype)
  })

  it("keeps attribute values equal to protobuf's defaults (false, 0, empty) sent as protobuf", () => {
    const body = Proto.encodeRequest("traces", {
      resourceSpans: [
        {
          scopeSpans: [
            {
              spans: [
                {
                  traceId: Buffer.from(traceId, "hex"),
                  spanId: Buffer.from("eee19b7ec3c1b174", "hex"),
                  name: "x",
                  attributes: [
                    { key: "no", value: { boolValue: false } },
                    { key: "zero", value: { intValue: "0" } },
                    { key: "none", value: { doubleValue: 0 } },
                    { key: "blank", value: { stringValue: "" } },
                    { key: "unset", value: {} }
                  ]
                }
              ]
            }
          ]
        }
      ]
    })
    const decoded = Proto.decodeRequest("traces", "protobuf", body)
    if (Either.isLeft(decoded)) throw new Error(decoded.left)
    expect(mapTraces(decoded.right).items[0]?.attributes).toEqual({ no: false, zero: 0, none: 0, blank: "" })
  })

  it("reads protobuf strings as UTF-8 whatever their length, the same in every span, and refuses invalid UTF-8", () => {
    const long = "a".repeat(65)
    const strings = ["o-42", "telemetrygen-client", "café ☕", long, "", "é".repeat(40)]
    const request = (name: string) => ({
      resourceSpans: [
        {
          scopeSpans: [
            {
              spans: [1, 2].map((n) => ({
                traceId: Buffer.from(traceId, "hex"),
                spanId: Buffer.from(`eee19b7ec3c1b17${n}`, "hex"),
                name,
                attributes: strings.map((s, i) => ({ key: `k${i}`, value: { stringValue: s } }))
              }))
            }
          ]
        }
      ]
    })
    // Twice: the second request's strings are the ones decoded lately.
    for (let round = 0; round < 2; round++) {
      const decoded = Proto.decodeRequest("traces", "protobuf", Proto.encodeRequest("traces", request("ab")))
      if (Either.isLeft(decoded)) throw new Error(decoded.left)
      const items = mapTraces(decoded.right).items
      expect(items.map((s) => [s.name, s.attributes])).toEqual(
        [1, 2].map(() => ["ab", Object.fromEntries(strings.map((s, i) => [`k${i}`, s]))])
      )
    }
    // A name of two bytes that are not UTF-8 (a lead byte, then no continuation byte), in place of "ZQ".
    const body = Buffer.from(Proto.encodeRequest("traces", request("ZQ")))
    for (let at = body.indexOf("ZQ"); at >= 0; at = body.indexOf("ZQ", at)) body.set([0xc3, 0x28], at)
    expect(Either.isLeft(Proto.decodeRequest("traces", "protobuf", body))).toBe(true)
  })

  it("maps resource identity and HTTP conventions, keeping the rest as attributes", () => {
    const resource = [
      { key: "service.name", value: { stringValue: "cart" } },
      { key: "k8s.namespace.name", value: { stringValue: "shop" } },
      { key: "k8s.pod.name", value: { stringValue: "cart-1" } },
      { key: "k8s.node.name", value: { stringValue: "n1" } },
      { key: "iii.component", value: { stringValue: "cart" } }
    ]
    const [current, old] = spans(
      [
        {
          traceId,
          spanId: "eee19b7ec3c1b174",
          name: "GET /cart/{id}",
          kind: 2,
          attributes: [
            { key: "http.request.method", value: { stringValue: "GET" } },
            { key: "http.route", value: { stringValue: "/cart/{id}" } },
            { key: "url.path", value: { stringValue: "/cart/9" } },
            { key: "http.response.status_code", value: { intValue: "404" } },
            { key: "k8s.node.name", value: { stringValue: "own value wins" } },
            { key: "iii.correlation_id", value: { stringValue: "order-9" } }
          ]
        },
        {
          traceId,
          spanId: "eee19b7ec3c1b175",
          name: "POST",
          attributes: [
            { key: "http.method", value: { stringValue: "POST" } },
            { key: "http.target", value: { stringValue: "/pay?x=1" } },
            { key: "http.status_code", value: { stringValue: "503" } },
            { key: "net.peer.ip", value: { stringValue: "10.1.2.3" } },
            { key: "net.peer.port", value: { intValue: 8080 } }
          ],
          status: { code: 2, message: "boom" }
        }
      ],
      resource
    ).items
    expect(current).toMatchObject({
      service: "cart",
      namespace: "shop",
      pod: "cart-1",
      component: "cart",
      correlationId: "order-9",
      kind: "server",
      http: { method: "GET", route: "/cart/{id}", path: "/cart/9", statusCode: 404 },
      error: false
    })
    expect(current?.attributes).toEqual({ "k8s.node.name": "own value wins" })
    expect(current?.status).toBeUndefined()
    expect(old).toMatchObject({
      kind: "internal",
      correlationId: traceId,
      http: { method: "POST", route: "POST", path: "/pay", statusCode: 503 },
      peerAddress: "10.1.2.3",
      peerPort: 8080,
      error: true,
      status: { code: "error", message: "boom" },
      attributes: { "k8s.node.name": "n1", "http.target": "/pay?x=1" }
    })
  })

  it("rejects spans it cannot key or date, naming the first reasons", () => {
    const m = spans([
      { traceId: "abcd", spanId: "eee19b7ec3c1b174", name: "short trace id" },
      { traceId, spanId: "0000000000000000", name: "zero span id" },
      {
        traceId,
        spanId: "eee19b7ec3c1b174",
        name: "backwards",
        startTimeUnixNano: "2000",
        endTimeUnixNano: "1000"
      },
      { traceId, spanId: "eee19b7ec3c1b175", parentSpanId: "ee", name: "short parent" },
      { traceId, spanId: "eee19b7ec3c1b176", name: "fine" }
    ])
    expect(m.items.map((s) => s.name)).toEqual(["fine"])
    expect(m.indexes).toEqual([4])
    expect(m.rejections.count).toBe(4)
    expect(m.rejections.message()).toMatch(
      /trace id is not 16 bytes.*span id is not 8 bytes.*ends before it starts; and 1 more/
    )
  })

  it("refuses what does not decode", () => {
    for (const body of [
      "{",
      "[1]",
      '"text"',
      '{"resourceSpans":{}}',
      `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}`
    ])
      expect(Either.isLeft(Proto.decodeRequest("traces", "json", Buffer.from(body))), body).toBe(true)
    expect(Either.isLeft(Proto.decodeRequest("traces", "protobuf", Buffer.from([0x0a, 0x05, 0x01])))).toBe(
      true
    )
  })
})

describe("OTLP/JSON logs", () => {
  it("maps severity, time, body and trace context", () => {
    const now = 1767225600123000000n
    const m = mapLogs(
      decode("logs", {
        resourceLogs: [
          {
            resource: { attributes: [{ key: "service.name", value: { stringValue: "cart" } }] },
            scopeLogs: [
              {
                logRecords: [
                  {
                    timeUnixNano: "1767225600000000000",
                    severityNumber: 13,
                    body: { stringValue: "slow" },
                    traceId,
                    spanId: "eee19b7ec3c1b174"
                  },
                  {
                    observedTimeUnixNano: "1767225600000000500",
                    severityText: "WARNING",
                    body: { kvlistValue: { values: [{ key: "a", value: { intValue: 1 } }] } }
                  },
                  {
                    severityNumber: 21,
                    traceId: "",
                    attributes: [{ key: "log.iostream", value: { stringValue: "stderr" } }]
                  }
                ]
              }
            ]
          }
        ]
      }),
      now
    )
    expect(m.items).toEqual([
      {
        timeUnixNano: 1767225600000000000n,
        service: "cart",
        level: "warn",
        body: "slow",
        traceId,
        spanId: "eee19b7ec3c1b174"
      },
      { timeUnixNano: 1767225600000000500n, service: "cart", level: "warn", body: '{"a":1}' },
      { timeUnixNano: now, service: "cart", level: "fatal", body: "", stream: "stderr" }
    ])
    expect(m.indexes).toEqual([0, 1, 2])
  })
})

describe("OTLP/JSON metrics", () => {
  it("stores sums that are not monotonic deltas as gauges, histograms with their buckets, and leaves out nameless metrics", () => {
    const p = { timeUnixNano: "1767225600000000000", asInt: "12" }
    const m = mapMetrics(
      decode("metrics", {
        resourceMetrics: [
          {
            scopeMetrics: [
              {
                metrics: [
                  { name: "total", sum: { aggregationTemporality: 2, isMonotonic: true, dataPoints: [p] } },
                  {
                    name: "in.flight",
                    sum: { aggregationTemporality: 1, isMonotonic: false, dataPoints: [p] }
                  },
                  { name: "", gauge: { dataPoints: [p, p] } },
                  { name: "after", gauge: { dataPoints: [{ ...p, asDouble: 1.5, asInt: undefined }] } },
                  {
                    name: "latency",
                    histogram: {
                      aggregationTemporality: 1,
                      dataPoints: [
                        {
                          ...p,
                          asInt: undefined,
                          count: "4",
                          sum: 0.9,
                          bucketCounts: ["1", "3"],
                          explicitBounds: [0.1]
                        }
                      ]
                    }
                  }
                ]
              }
            ]
          }
        ]
      })
    )
    expect(m.items).toEqual([
      expect.objectContaining({
        name: "total",
        kind: "gauge",
        value: 12,
        attributes: { "iii.otlp.sum": "cumulative" }
      }),
      expect.objectContaining({
        name: "in.flight",
        kind: "gauge",
        value: 12,
        attributes: { "iii.otlp.sum": "updown" }
      }),
      expect.objectContaining({ name: "after", kind: "gauge", value: 1.5 }),
      expect.objectContaining({
        name: "latency",
        kind: "distribution",
        value: 4,
        attributes: {
          "iii.otlp.histogram.sum": 0.9,
          "iii.otlp.histogram.buckets": '{"bounds":[0.1],"counts":[1,3]}'
        }
      })
    ])
    expect(m.indexes).toEqual([0, 1, 4, 5])
    expect(m.rejections.count).toBe(2)
  })
})
