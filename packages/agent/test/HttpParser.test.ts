import { describe, expect, it } from "vitest"
import { HttpParser, type MessageHead, type MessageKind } from "../src/internal/HttpParser.js"
import * as F from "./fixtures/http.js"

interface Recorded {
  readonly heads: Array<{ head: MessageHead; at: bigint }>
  readonly ends: Array<{ at: bigint; complete: boolean }>
  notHttp: number
  readonly hidden: Array<bigint>
}

const record = (kind: MessageKind, bodyless: (head: MessageHead) => boolean = () => false) => {
  const seen: Recorded = { heads: [], ends: [], notHttp: 0, hidden: [] }
  const parser = new HttpParser(kind, {
    onHead: (head, at) => {
      seen.heads.push({ head, at })
      return bodyless(head)
    },
    onEnd: (at, complete) => seen.ends.push({ at, complete }),
    onNotHttp: () => {
      seen.notHttp++
    },
    onHidden: (at) => {
      seen.hidden.push(at)
    }
  })
  return { parser, seen }
}

const bytes = (s: string) => Buffer.from(s, "latin1")

describe("HttpParser", () => {
  it("parses a request head: method, target, trace headers, case-insensitive names", () => {
    const { parser, seen } = record("request")
    parser.push(bytes(F.getRequest), 0, 5n)
    expect(seen.heads).toHaveLength(1)
    const head = seen.heads[0]?.head
    expect(head).toMatchObject({
      method: "GET",
      target: "/users/123?verbose=1",
      version: "1.1",
      host: "example.test",
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      correlationId: "order-42",
      keepAlive: true,
      truncated: false
    })
    expect(seen.ends).toEqual([{ at: 5n, complete: true }])
  })

  it("handles every split point of a request across two reads", () => {
    const whole = F.getRequest + F.postRequest("x=1&y=2") + F.chunkedRequest
    for (let split = 1; split < whole.length; split++) {
      const { parser, seen } = record("request")
      parser.push(bytes(whole.slice(0, split)), 0, 1n)
      parser.push(bytes(whole.slice(split)), 0, 2n)
      expect(
        seen.heads.map((h) => `${h.head.method} ${h.head.target}`),
        `split at ${split}`
      ).toEqual(["GET /users/123?verbose=1", "POST /orders", "PUT /files/abc"])
      expect(seen.ends.every((e) => e.complete)).toBe(true)
      expect(seen.ends).toHaveLength(3)
      expect(seen.notHttp).toBe(0)
    }
  })

  it("handles every split point of a chunked response across two reads", () => {
    const whole = F.chunkedResponse + F.okResponse("done")
    for (let split = 1; split < whole.length; split++) {
      const { parser, seen } = record("response")
      parser.push(bytes(whole.slice(0, split)), 0, 1n)
      parser.push(bytes(whole.slice(split)), 0, 2n)
      expect(
        seen.heads.map((h) => h.head.statusCode),
        `split at ${split}`
      ).toEqual([201, 200])
      expect(seen.ends.map((e) => e.complete)).toEqual([true, true])
      // The chunked response ends in the second read exactly when its terminator is split off.
      const chunkedEnd = split >= F.chunkedResponse.length ? 1n : 2n
      expect(seen.ends[0]?.at, `split at ${split}`).toBe(chunkedEnd)
    }
  })

  it("survives a message delivered one byte per read", () => {
    const { parser, seen } = record("response")
    const whole = F.chunkedResponse + F.okResponse("hello world")
    for (let i = 0; i < whole.length; i++) parser.push(bytes(whole[i] ?? ""), 0, BigInt(i))
    expect(seen.heads.map((h) => h.head.statusCode)).toEqual([201, 200])
    expect(seen.ends.map((e) => e.at)).toEqual([
      BigInt(F.chunkedResponse.length - 1),
      BigInt(whole.length - 1)
    ])
  })

  it("parses pipelined requests in one read", () => {
    const { parser, seen } = record("request")
    parser.push(bytes(F.getRequest + F.getRequest + F.postRequest("abc") + F.headRequest), 0, 1n)
    expect(seen.heads.map((h) => h.head.method)).toEqual(["GET", "GET", "POST", "HEAD"])
    expect(seen.ends).toHaveLength(4)
  })

  it("skips Content-Length bodies that were not captured, without losing the next message", () => {
    const { parser, seen } = record("response")
    const big = "x".repeat(100_000)
    const response = F.okResponse(big)
    // The kernel captured 4 KiB of the 100 KB write.
    parser.push(bytes(response.slice(0, 4096)), response.length - 4096, 1n)
    parser.push(bytes(F.okResponse("small")), 0, 2n)
    expect(seen.heads.map((h) => h.head.contentLength)).toEqual([100_000, 5])
    expect(seen.ends).toEqual([
      { at: 1n, complete: true },
      { at: 2n, complete: true }
    ])
  })

  it("spreads a large body over many partially captured reads", () => {
    const { parser, seen } = record("response")
    const response = F.okResponse("y".repeat(50_000))
    let offset = 0
    let ts = 0n
    while (offset < response.length) {
      const total = Math.min(16_384, response.length - offset)
      const captured = Math.min(total, 1000)
      parser.push(bytes(response.slice(offset, offset + captured)), total - captured, ++ts)
      offset += total
    }
    expect(seen.ends).toEqual([{ at: ts, complete: true }])
  })

  it("counts uncaptured chunk data and keeps chunked framing", () => {
    const { parser, seen } = record("response")
    const chunk = "z".repeat(10_000)
    const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    const body = `${(10_000).toString(16)}\r\n${chunk}\r\n`
    parser.push(bytes(head), 0, 1n)
    parser.push(bytes(body.slice(0, 100)), body.length - 100, 2n)
    parser.push(bytes("0\r\n\r\n"), 0, 3n)
    expect(seen.ends).toEqual([{ at: 3n, complete: true }])
  })

  it("recovers when a gap hides chunk framing: ends at the last-chunk marker", () => {
    const { parser, seen } = record("response")
    const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    const body = `10\r\n${"a".repeat(16)}\r\n400\r\n${"b".repeat(1024)}\r\n`
    parser.push(bytes(head + body.slice(0, 30)), body.length - 30, 1n)
    parser.push(bytes("400\r\nccc"), 1024 + 2 - 3, 2n)
    parser.push(bytes("0\r\n\r\n"), 0, 3n)
    parser.push(bytes(F.okResponse("next")), 0, 4n)
    expect(seen.heads.map((h) => h.head.statusCode)).toEqual([200, 200])
    expect(seen.ends).toEqual([
      { at: 3n, complete: true },
      { at: 4n, complete: true }
    ])
  })

  it("reports a truncated head with what it saw, then resyncs at the next message", () => {
    const { parser, seen } = record("request")
    const longCookie = `Cookie: ${"c".repeat(8000)}`
    const request = `GET /big/1 HTTP/1.1\r\nHost: h\r\n${longCookie}\r\nX-After: 1\r\n\r\n`
    parser.push(bytes(request.slice(0, 4096)), request.length - 4096, 1n)
    parser.push(bytes(F.getRequest), 0, 2n)
    expect(seen.heads.map((h) => [h.head.target, h.head.truncated, h.head.host])).toEqual([
      ["/big/1", true, "h"],
      ["/users/123?verbose=1", false, "example.test"]
    ])
  })

  it("ends a response with a truncated head at once (status known, end unknown)", () => {
    const { parser, seen } = record("response")
    const response = `HTTP/1.1 503 Service Unavailable\r\nX-Big: ${"v".repeat(9000)}\r\n\r\n`
    parser.push(bytes(response.slice(0, 4096)), response.length - 4096, 7n)
    expect(seen.heads[0]?.head).toMatchObject({ statusCode: 503, truncated: true })
    expect(seen.ends).toEqual([{ at: 7n, complete: false }])
  })

  it("gives 1xx, 204 and 304 responses no body, whatever their headers say", () => {
    const { parser, seen } = record("response")
    parser.push(bytes(F.continueResponse + F.noContent + F.notModified + F.okResponse("ok")), 0, 1n)
    expect(seen.heads.map((h) => h.head.statusCode)).toEqual([100, 204, 304, 200])
    expect(seen.ends).toHaveLength(4)
  })

  it("gives the response to HEAD no body when the handler says so", () => {
    const { parser, seen } = record("response", () => true)
    parser.push(bytes(F.headResponse + F.okResponse("x")), 0, 1n)
    expect(seen.heads.map((h) => h.head.statusCode)).toEqual([200, 200])
    expect(seen.ends).toHaveLength(2)
  })

  it("reads a body until close when a response has no length", () => {
    const { parser, seen } = record("response")
    parser.push(bytes(F.untilClose), 0, 1n)
    parser.push(bytes(" more bytes"), 0, 2n)
    expect(seen.ends).toEqual([])
    parser.close()
    expect(seen.heads[0]?.head.keepAlive).toBe(false)
    expect(seen.ends).toEqual([{ at: 2n, complete: true }])
  })

  it("reports a message cut by the connection closing mid-body as incomplete", () => {
    const { parser, seen } = record("response")
    parser.push(bytes(F.okResponse("0123456789").slice(0, -4)), 0, 1n)
    parser.close()
    expect(seen.ends).toEqual([{ at: 1n, complete: false }])
  })

  it("says a stream is not HTTP from its first bytes, and then ignores it", () => {
    for (const first of ["\x16\x03\x01\x02\x00", "*1\r\n$4\r\nPING\r\n", "SSH-2.0-OpenSSH\r\n", "PING\r\n"]) {
      const { parser, seen } = record("request")
      parser.push(bytes(first), 0, 1n)
      parser.push(bytes(F.getRequest), 0, 2n)
      expect(seen.notHttp, JSON.stringify(first)).toBe(1)
      expect(seen.heads).toHaveLength(0)
      expect(parser.opaque).toBe(true)
    }
    const { parser, seen } = record("response")
    parser.push(bytes("220 smtp.example ESMTP\r\n"), 0, 1n)
    expect(seen.notHttp).toBe(1)
    expect(parser.opaque).toBe(true)
  })

  it("knows a request by its method: every known one, nothing that only looks like one", () => {
    const known = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
    for (const method of [
      ...known,
      "PROPFIND",
      "PROPPATCH",
      "MKCOL",
      "COPY",
      "MOVE",
      "LOCK",
      "UNLOCK",
      "SEARCH",
      "REPORT",
      "PURGE"
    ]) {
      const { parser, seen } = record("request")
      parser.push(bytes(`${method} /x HTTP/1.1\r\nHost: h\r\n\r\n`), 0, 1n)
      expect(
        seen.heads.map((h) => h.head.method),
        method
      ).toEqual([method])
    }
    for (const first of [
      "GETS /x HTTP/1.1\r\n\r\n",
      "GE /x HTTP/1.1\r\n\r\n",
      "PROPFINDS /x HTTP/1.1\r\n\r\n",
      "G\xc5T /x HTTP/1.1\r\n\r\n",
      "POS\xd4 /x HTTP/1.1\r\n\r\n"
    ]) {
      const { parser, seen } = record("request")
      parser.push(bytes(first), 0, 1n)
      expect(seen.notHttp, JSON.stringify(first)).toBe(1)
    }
    // The version must be HTTP/1.x exactly; a response must start with it.
    const { parser, seen } = record("request")
    parser.push(bytes("GET /x HTTP/2.0\r\n\r\n"), 0, 1n)
    expect(seen.heads).toHaveLength(0)
    const response = record("response")
    response.parser.push(bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0, 1n)
    response.parser.push(bytes("HTTQ/1.1 200 OK\r\n\r\n"), 0, 2n)
    expect(response.seen.heads.map((h) => h.head.statusCode)).toEqual([200])
  })

  it("treats a repeated traceparent as absent and conflicting lengths as unknown", () => {
    const { parser, seen } = record("request")
    parser.push(
      bytes(
        "GET / HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n" +
          "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203332-01\r\n\r\n"
      ),
      0,
      1n
    )
    expect(seen.heads[0]?.head.traceparent).toBeUndefined()
    const response = record("response")
    response.parser.push(bytes("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc"), 0, 1n)
    expect(response.seen.heads[0]?.head.contentLength).toBe(-1)
  })

  it("loses sync on garbage between messages and resyncs at the next syscall starting a message", () => {
    const { parser, seen } = record("request")
    parser.push(bytes(F.getRequest), 0, 1n)
    parser.push(bytes("\x00\x01garbage"), 0, 2n)
    parser.push(bytes("more garbage GET / HTTP/1.1\r\n\r\n"), 0, 3n)
    parser.push(bytes(F.headRequest), 0, 4n)
    expect(seen.heads.map((h) => h.head.method)).toEqual(["GET", "HEAD"])
    expect(seen.notHttp).toBe(0)
  })

  it("never throws on random bytes and random gaps, and stays bounded", () => {
    let seed = 7
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return seed / 0x7fffffff
    }
    const pieces = [
      F.getRequest,
      F.chunkedResponse,
      F.okResponse("abc"),
      "GET / HTTP/1.1\r\n",
      "\r\n",
      "0\r\n\r\n"
    ]
    for (let round = 0; round < 300; round++) {
      for (const kind of ["request", "response"] as const) {
        const { parser } = record(kind)
        for (let event = 0; event < 30; event++) {
          const useFixture = random() < 0.5
          const length = Math.floor(random() * 200)
          const bytes = useFixture
            ? Buffer.from(pieces[Math.floor(random() * pieces.length)] ?? "", "latin1")
            : Buffer.from(Array.from({ length }, () => Math.floor(random() * 256)))
          const gap = random() < 0.2 ? Math.floor(random() * 100_000) : 0
          expect(() => parser.push(bytes, gap, BigInt(event))).not.toThrow()
        }
        expect(() => parser.close()).not.toThrow()
      }
    }
  })

  it("finds every message of a long random sequence split at random points", () => {
    let seed = 11
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return seed / 0x7fffffff
    }
    const messages = [
      F.okResponse("x".repeat(300)),
      F.chunkedResponse,
      F.noContent,
      F.continueResponse,
      F.notModified
    ]
    let stream = ""
    let finals = 0
    for (let i = 0; i < 500; i++) {
      const message = messages[Math.floor(random() * messages.length)] ?? ""
      stream += message
      finals++
    }
    const { parser, seen } = record("response")
    let at = 0
    while (at < stream.length) {
      const size = 1 + Math.floor(random() * 700)
      parser.push(bytes(stream.slice(at, at + size)), 0, BigInt(at))
      at += size
    }
    expect(seen.heads).toHaveLength(finals)
    expect(seen.ends.every((end) => end.complete)).toBe(true)
    expect(seen.ends).toHaveLength(finals)
  })
})
