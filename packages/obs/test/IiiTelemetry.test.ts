/**
 * An Effect app traced into iii with `IiiTelemetry.layer`: the example app (examples/effect-app) runs
 * against a real node, and its server, client and `withSpan` spans come back as one trace with the
 * agent's span of the same request, and the `Effect.log` line tied to the span it was written in.
 */
import { Effect, Exit, Layer, Option, Redacted, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CheckoutApp } from "../../../examples/effect-app/main.js"
import { freePort, getJson, type RunningNode, startNode, TestAgent } from "./fixtures/Node.js"
import { span as agentSpan } from "./fixtures/Spans.js"

const token = "effect-app-token"
const auth = { authorization: `Bearer ${token}` }

/** Runs the example app, requests GET /checkout/7 in `traceId`, then releases the app (flushing its exports). */
const runCheckout = async (obs: string, appToken: string, traceId: string, callerSpanId: string) => {
  const port = await freePort()
  const scope = Effect.runSync(Scope.make())
  await Effect.runPromise(
    Layer.buildWithScope(CheckoutApp({ port, obs, token: Redacted.make(appToken) }), scope)
  )
  try {
    const res = await fetch(`http://127.0.0.1:${port}/checkout/7`, {
      headers: { traceparent: `00-${traceId}-${callerSpanId}-01` }
    })
    return { status: res.status, body: await res.json() }
  } finally {
    // Releasing the layer sends what is left in the exporter's batches.
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

describe("IiiTelemetry.layer", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode({ token: Option.some(Redacted.make(token)) })
  })
  afterAll(() => node.stop())

  it("stores the example app's server, client and withSpan spans in one trace with the agent's caller span, and its log on the server span", async () => {
    // The caller's traceparent (its client span, which the agent captures): the app's spans join its trace.
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
    const callerSpanId = "00f067aa0ba902b7"
    expect(await runCheckout(node.url, token, traceId, callerSpanId)).toEqual({
      status: 200,
      body: { id: "7", price: 42 }
    })

    // The agent captured the caller's side of the same request: its span and the app's are one trace.
    const agent = new TestAgent(node.url, auth)
    await agent.hello("agent-effect-app")
    const caller = agentSpan({
      service: "frontend",
      kind: "client",
      traceId: traceId as never,
      correlationId: traceId,
      spanId: callerSpanId as never
    })
    agent.send({ type: "batch", seq: 1, spans: [caller], metrics: [], logs: [] })
    expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
    agent.close()

    const trace = await getJson(`${node.url}/v1/traces/${traceId}`, auth)
    expect(trace.status).toBe(200)
    const spans = trace.body.spans as Array<Record<string, unknown>>
    const named = (name: string, route: string) =>
      spans.find((s) => s.name === name && (s.http as { route?: string } | undefined)?.route === route)
    const checkout = named("http.server GET", "/checkout/:id")
    const pricing = spans.find((s) => s.name === "price order")
    const client = spans.find((s) => s.kind === "client" && s.service === "checkout")
    const price = named("http.server GET", "/price/:id")
    expect(spans.map((s) => s.service).sort()).toEqual([
      "checkout",
      "checkout",
      "checkout",
      "checkout",
      "frontend"
    ])
    expect(checkout).toMatchObject({
      traceId,
      service: "checkout",
      kind: "server",
      parentSpanId: callerSpanId,
      http: { method: "GET", path: "/checkout/7", statusCode: 200 }
    })
    expect(checkout?.parentMissing).toBeUndefined()
    expect(pricing).toMatchObject({
      kind: "internal",
      parentSpanId: checkout?.spanId,
      attributes: expect.objectContaining({ "order.id": "7" })
    })
    expect(client).toMatchObject({
      service: "checkout",
      parentSpanId: pricing?.spanId,
      http: { method: "GET", path: "/price/7", statusCode: 200 }
    })
    expect(price).toMatchObject({ kind: "server", parentSpanId: client?.spanId })

    const correlated = await getJson(`${node.url}/v1/correlate/${traceId}`, auth)
    expect(correlated.body.logs).toEqual([
      expect.objectContaining({
        service: "checkout",
        level: "info",
        body: "checkout 7",
        traceId,
        spanId: checkout?.spanId
      })
    ])
  })

  it("with the wrong token the app still answers, and the node stores nothing of it", async () => {
    const traceId = "5b8efff798038103d269b633813fc60c"
    expect(await runCheckout(node.url, "not-the-token", traceId, "eee19b7ec3c1b174")).toEqual({
      status: 200,
      body: { id: "7", price: 42 }
    })
    expect((await getJson(`${node.url}/v1/traces/${traceId}`, auth)).status).toBe(404)
    const correlated = await getJson(`${node.url}/v1/correlate/${traceId}`, auth)
    expect(correlated.body.logs ?? []).toEqual([])
  })
})
