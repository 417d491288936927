/**
 * The reverse mapping (iii → OTLP), checked through the wire: encoded with the proto module, decoded,
 * and mapped back by the ingest mapping, each item comes back as it was (plus the exporter's scope).
 */
import type { Telemetry } from "@iii/core"
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { logsRequest, metricsRequest, tracesRequest } from "../src/internal/otlp/OtlpExportMap.js"
import { mapLogs, mapMetrics, mapTraces } from "../src/internal/otlp/OtlpMap.js"
import * as OtlpProto from "../src/internal/otlp/OtlpProto.js"
import { log, span, t0 } from "./fixtures/Spans.js"

const through = <S extends OtlpProto.Signal>(signal: S, request: object): OtlpProto.Requests[S] => {
  const decoded = OtlpProto.decodeRequest(signal, "protobuf", OtlpProto.encodeRequest(signal, request))
  if (Either.isLeft(decoded)) throw new Error(decoded.left)
  return decoded.right
}

const scope = { "otel.scope.name": "iii.obs" }

describe("OTLP export mapping", () => {
  it("gives spans back as they were: ids, resource, kind, http, peer, status, events, links, attributes", () => {
    const parent = span({ trace: 1 })
    const spans: Array<Telemetry.Span> = [
      parent,
      span({
        trace: 1,
        parentSpanId: parent.spanId,
        service: "payments",
        namespace: "shop",
        pod: "payments-0",
        kind: "producer",
        correlationId: "order-1234",
        peerAddress: "10.0.0.7",
        peerPort: 5432,
        attributes: { "order.id": 42, ratio: 0.5, express: true, note: "x" },
        status: { code: "error", message: "declined" },
        error: true,
        events: [{ timeUnixNano: t0, name: "retry", attributes: { attempt: 2 } }],
        links: [{ traceId: parent.traceId, spanId: parent.spanId, attributes: { why: "follows" } }]
      }),
      span({ trace: 2, kind: "internal", http: undefined, error: true })
    ]
    const back = mapTraces(through("traces", tracesRequest(spans)))
    expect(back.rejections.count).toBe(0)
    const expected = spans.map((s) => {
      const { http: _, ...rest } = s
      const plain = s.http === undefined ? rest : s
      return {
        ...plain,
        attributes: { ...scope, ...s.attributes },
        ...(s.error && s.status === undefined ? { status: { code: "error" } } : {})
      }
    })
    expect(new Set(back.items.map((s) => s.spanId))).toEqual(new Set(spans.map((s) => s.spanId)))
    for (const e of expected) expect(back.items.find((s) => s.spanId === e.spanId)).toEqual(e)
  })

  it("gives logs and metric points back: level, body, ids, stream; counters, gauges, distributions", () => {
    const logs = [
      log({ level: "error", body: "boom", traceId: span().traceId, spanId: span().spanId, stream: "stderr" }),
      log({ service: "payments", correlationId: "order-1", attributes: { user: "ada" } })
    ]
    const back = mapLogs(through("logs", logsRequest(logs)), 0n)
    expect(back.items).toEqual(logs.map((l) => ({ ...l, attributes: { ...scope, ...l.attributes } })))

    const points: Array<Telemetry.MetricPoint> = [
      {
        name: "orders",
        kind: "counter",
        service: "shop",
        timeUnixNano: t0,
        intervalNano: 10_000_000_000,
        value: 3
      },
      {
        name: "queue.depth",
        kind: "gauge",
        service: "shop",
        timeUnixNano: t0,
        intervalNano: 0,
        value: 7.5,
        attributes: { q: "a" }
      }
    ]
    const metrics = mapMetrics(through("metrics", metricsRequest(points)))
    expect(metrics.items).toEqual(points.map((p) => ({ ...p, attributes: { ...scope, ...p.attributes } })))
    const distribution = mapMetrics(
      through(
        "metrics",
        metricsRequest([
          {
            name: "latency",
            kind: "distribution",
            service: "shop",
            timeUnixNano: t0,
            intervalNano: 1_000,
            value: 4,
            sketch: { count: 4, sum: 10, zeroCount: 0, offset: 0, counts: [4] }
          }
        ])
      )
    ).items[0]
    expect(distribution).toMatchObject({ kind: "distribution", value: 4, intervalNano: 1_000 })
    expect(distribution?.attributes?.["iii.otlp.histogram.sum"]).toBe(10)
  })
})
