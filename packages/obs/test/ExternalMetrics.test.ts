import { Either } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as ExternalMetrics from "../src/ExternalMetrics.js"
import { getJson, type RunningNode, startNode, TestAgent } from "./fixtures/Node.js"
import { span } from "./fixtures/Spans.js"

const base = "/apis/external.metrics.k8s.io/v1beta1"

describe("External Metrics API", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode()
    const now = BigInt(Date.now()) * 1_000_000n
    // 100 requests of checkout (1..100 ms, 4 errors) and one of users, all in the last few seconds.
    const spans = [
      ...Array.from({ length: 100 }, (_, i) =>
        span({
          startTimeUnixNano: now - BigInt(i) * 1_000_000n,
          durationNano: (i + 1) * 1_000_000,
          error: i % 25 === 0,
          composition: "shop",
          component: "checkout",
          namespace: "prod"
        })
      ),
      span({
        service: "users",
        component: "users",
        composition: "shop",
        namespace: "prod",
        startTimeUnixNano: now
      })
    ]
    const agent = new TestAgent(node.url)
    await agent.hello("hpa-agent")
    agent.send({ type: "batch", seq: 1, spans, metrics: [], logs: [] })
    await agent.ack(1)
    agent.close()
  })
  afterAll(() => node.stop())

  it("serves the discovery documents the aggregator reads", async () => {
    const list = await getJson(`${node.url}${base}`)
    expect(list.body).toMatchObject({
      kind: "APIResourceList",
      groupVersion: "external.metrics.k8s.io/v1beta1"
    })
    expect(list.body.resources.map((r: { name: string }) => r.name)).toContain("iii_p99_latency_ms")
    expect(list.body.resources[0]).toMatchObject({
      namespaced: true,
      kind: "ExternalMetricValueList",
      verbs: ["get"]
    })
    const group = await getJson(`${node.url}/apis/external.metrics.k8s.io`)
    expect(group.body).toMatchObject({ kind: "APIGroup", name: "external.metrics.k8s.io" })
  })

  it("answers an ExternalMetricValueList for a matchLabels selector", async () => {
    const selector = encodeURIComponent("iii.io/composition=shop,iii.io/component=checkout")
    const r = await getJson(`${node.url}${base}/namespaces/prod/iii_p99_latency_ms?labelSelector=${selector}`)
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({
      kind: "ExternalMetricValueList",
      apiVersion: "external.metrics.k8s.io/v1beta1",
      metadata: {}
    })
    expect(r.body.items).toHaveLength(1)
    const item = r.body.items[0]
    expect(item.metricName).toBe("iii_p99_latency_ms")
    expect(item.metricLabels).toEqual({ "iii.io/composition": "shop", "iii.io/component": "checkout" })
    expect(item.window).toBe(60)
    expect(item.timestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/)
    expect(item.value).toMatch(/^\d+m?$/)
    const millis = item.value.endsWith("m") ? Number(item.value.slice(0, -1)) / 1000 : Number(item.value)
    expect(millis).toBeGreaterThan(97)
    expect(millis).toBeLessThan(102)

    const errors = await getJson(
      `${node.url}${base}/namespaces/prod/iii_error_rate?labelSelector=service%3Dcheckout`
    )
    expect(errors.body.items[0].value).toBe("4")
    const rate = await getJson(
      `${node.url}${base}/namespaces/prod/iii_request_rate?labelSelector=service%3Dusers`
    )
    expect(rate.body.items[0].value).toMatch(/^\d+m$/)
    const all = await getJson(
      `${node.url}${base}/namespaces/prod/iii_p50_latency_ms?labelSelector=iii.io%2Fcomposition%3Dshop`
    )
    expect(all.body.items).toHaveLength(1)
  })

  it("answers no items for an unknown selector or namespace, 404 for unknown metrics, 400 for bad selectors", async () => {
    expect(
      (await getJson(`${node.url}${base}/namespaces/prod/iii_p99_latency_ms?labelSelector=service%3Dnope`))
        .body.items
    ).toEqual([])
    expect((await getJson(`${node.url}${base}/namespaces/staging/iii_p99_latency_ms`)).body.items).toEqual([])
    expect((await getJson(`${node.url}${base}/namespaces/prod/cpu`)).status).toBe(404)
    const bad = await getJson(
      `${node.url}${base}/namespaces/prod/iii_p99_latency_ms?labelSelector=team%20in%20(a)`
    )
    expect(bad.status).toBe(400)
    expect(bad.body.parameter).toBe("labelSelector")
  })

  it("formats Kubernetes quantities and parses selectors", () => {
    expect(ExternalMetrics.formatQuantity(187)).toBe("187")
    expect(ExternalMetrics.formatQuantity(0.25)).toBe("250m")
    expect(ExternalMetrics.formatQuantity(250.5)).toBe("250500m")
    expect(ExternalMetrics.formatQuantity(0)).toBe("0")
    expect(ExternalMetrics.parseSelector("service!=a, iii.io/component==b")).toEqual(
      Either.right([
        { key: "service", op: "!=", value: "a" },
        { key: "iii.io/component", op: "=", value: "b" }
      ])
    )
    expect(Either.isLeft(ExternalMetrics.parseSelector("color=red"))).toBe(true)
  })
})
