import { describe, expect, it } from "vitest"
import type { MessageHead } from "../src/internal/HttpParser.js"
import { type ExchangeRecord, toSpan } from "../src/internal/Spans.js"

const request: MessageHead = {
  kind: "request",
  method: "GET",
  target: "/cart/1",
  statusCode: 0,
  version: "1.1",
  contentLength: -1,
  chunked: false,
  keepAlive: true,
  host: undefined,
  traceparent: undefined,
  tracestate: undefined,
  correlationId: undefined,
  truncated: false
}

const record = (statusCode: number): ExchangeRecord => ({
  role: "server",
  context: {
    traceId: "4bf92f3577b34da6a3ce929d0e0e4736" as never,
    spanId: "00f067aa0ba902b7" as never,
    parentSpanId: undefined,
    correlationId: "4bf92f3577b34da6a3ce929d0e0e4736",
    flags: 1
  },
  request,
  statusCode,
  startNs: 1_000n,
  endNs: 2_000n,
  outcome: "complete",
  peerAddress: undefined,
  peerPort: undefined
})

describe("toSpan", () => {
  it("keeps HTTP statuses 100-599 and leaves out any other three digits (obs refuses them)", () => {
    expect(toSpan({ service: "s" }, record(599), "/cart/{id}").http?.statusCode).toBe(599)
    const odd = toSpan({ service: "s" }, record(999), "/cart/{id}")
    expect(odd.http?.statusCode).toBeUndefined()
    expect(odd.error).toBe(true)
  })
})
