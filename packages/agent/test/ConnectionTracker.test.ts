import { describe, expect, it } from "vitest"
import { ConnectionTracker, type DropReason, type HttpExchange } from "../src/internal/ConnectionTracker.js"

const bytes = (text: string) => Buffer.from(text, "latin1")
const request = (path: string) => bytes(`GET ${path} HTTP/1.1\r\nHost: app\r\n\r\n`)
const response = (status: number, body = "ok") =>
  bytes(`HTTP/1.1 ${status} X\r\nContent-Length: ${body.length}\r\n\r\n${body}`)

/** A tracker recording exchanges (target → status) and drops, with one server connection open. */
const serverConnection = () => {
  const exchanges: Array<string> = []
  const dropped: Array<DropReason> = []
  const tracker = new ConnectionTracker<undefined>({
    onRequest: () => {},
    onExchange: (exchange: HttpExchange<undefined>) =>
      exchanges.push(`${exchange.head.target} ${exchange.response?.statusCode ?? exchange.outcome}`),
    onConnectionEnd: () => {},
    onDropped: (_, reason) => dropped.push(reason)
  })
  tracker.open(1, 7, "server", 0n, undefined, undefined)
  let now = 0n
  const tick = () => {
    now += 10n
    return now
  }
  return {
    tracker,
    exchanges,
    dropped,
    read: (payload: Uint8Array) => tracker.data(1, 1, 7, "ingress", payload, payload.byteLength, tick()),
    write: (payload: Uint8Array) => tracker.data(1, 1, 7, "egress", payload, payload.byteLength, tick()),
    lose: (direction: "ingress" | "egress", length: number) => tracker.lost(1, 7, direction, length, tick())
  }
}

describe("ConnectionTracker", () => {
  it("bounds the connection table: the oldest connection is ended when it is full", () => {
    const ended: Array<number> = []
    const tracker = new ConnectionTracker<undefined>(
      {
        onRequest: () => {},
        onExchange: () => {},
        onConnectionEnd: (connection) => ended.push(connection.fd),
        onDropped: () => {}
      },
      { maxConnections: 3 }
    )
    for (let fd = 10; fd < 15; fd++) tracker.open(1, fd, "server", BigInt(fd), undefined, undefined)
    expect(tracker.size).toBe(3)
    expect(ended).toEqual([10, 11])
    expect(tracker.evicted).toBe(2)
  })

  it("counts a request whose record the kernel lost when its response comes, and pairs the next ones right", () => {
    const c = serverConnection()
    c.lose("ingress", request("/a").byteLength)
    c.write(response(200))
    c.read(request("/b"))
    c.write(response(404))
    expect(c.exchanges).toEqual(["/b 404"])
    expect(c.dropped).toEqual(["ring_full"])
  })

  it("counts the request a lost response answered, instead of pairing it with the next response", () => {
    const c = serverConnection()
    c.read(request("/a"))
    c.lose("egress", response(200).byteLength)
    c.read(request("/b"))
    c.write(response(404))
    c.read(request("/c"))
    c.write(response(201))
    expect(c.exchanges).toEqual(["/b 404", "/c 201"])
    expect(c.dropped).toEqual(["ring_full"])
  })

  it("counts one request when both its records were lost", () => {
    const c = serverConnection()
    c.lose("ingress", request("/a").byteLength)
    c.lose("egress", response(200).byteLength)
    c.read(request("/b"))
    c.write(response(200))
    expect(c.exchanges).toEqual(["/b 200"])
    expect(c.dropped).toEqual(["ring_full"])
  })

  it("counts a run of lost responses one each", () => {
    const c = serverConnection()
    for (const path of ["/a", "/b", "/c"]) {
      c.read(request(path))
      c.lose("egress", response(200).byteLength)
    }
    c.read(request("/d"))
    c.write(response(202))
    expect(c.exchanges).toEqual(["/d 202"])
    expect(c.dropped).toEqual(["ring_full", "ring_full", "ring_full"])
  })

  it("counts lost bytes through a body of known length without losing the exchange", () => {
    const c = serverConnection()
    c.read(request("/a"))
    c.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123"))
    c.lose("egress", 6)
    c.read(request("/b"))
    c.write(response(200))
    expect(c.exchanges).toEqual(["/a 200", "/b 200"])
    expect(c.dropped).toEqual([])
  })

  it("blames an unpaired response on parsing when the kernel lost nothing", () => {
    const c = serverConnection()
    c.write(response(200))
    expect(c.dropped).toEqual(["unparsed"])
  })

  it("at shutdown reports the response under way and counts requests still waiting", () => {
    const c = serverConnection()
    c.read(bytes("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"))
    c.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123"))
    c.tracker.abandonAll()
    expect(c.exchanges).toEqual(["/a 200"])
    expect(c.dropped).toEqual(["shutdown"])
    expect(c.tracker.size).toBe(0)
  })

  it("counts a response on an untracked socket that lost its request (and its accept), then tracks it", () => {
    const c = serverConnection()
    c.tracker.lost(1, 99, "ingress", 100, 5n)
    expect(c.tracker.lostUntracked).toBe(1)
    c.tracker.data(1, 1, 99, "egress", response(200), response(200).byteLength, 6n)
    c.tracker.data(1, 1, 99, "ingress", request("/b"), request("/b").byteLength, 7n)
    c.tracker.data(1, 1, 99, "egress", response(201), response(201).byteLength, 8n)
    expect(c.dropped).toEqual(["ring_full"])
    expect(c.exchanges).toEqual(["/b 201"])
  })

  it("tells a connection's role from its first bytes when they come a few at a time (GE, then T / …)", () => {
    const c = serverConnection()
    const starts: Array<bigint> = []
    const tracker = new ConnectionTracker<undefined>({
      onRequest: (r) => starts.push(r.startNs),
      onExchange: (exchange) => c.exchanges.push(`${exchange.head.target} ${exchange.response?.statusCode}`),
      onConnectionEnd: () => {},
      onDropped: (_, reason) => c.dropped.push(reason)
    })
    // Opened without a role, as the capture reports sockets: its first bytes tell who is the server.
    const split = (at: Array<number>, text: Buffer, direction: "ingress" | "egress", from: bigint) => {
      for (const [i, start] of [0, ...at].entries())
        tracker.data(
          1,
          1,
          8,
          direction,
          text.subarray(start, at[i]),
          (at[i] ?? text.length) - start,
          from + BigInt(i)
        )
    }
    tracker.open(1, 8, undefined, 0n, undefined, undefined)
    split([2, 3], request("/a"), "ingress", 10n)
    split([5], response(200), "egress", 20n)
    split([4], bytes(`PROPFIND /dav HTTP/1.1\r\nHost: app\r\n\r\n`), "ingress", 30n)
    tracker.data(1, 1, 8, "egress", response(207), response(207).byteLength, 40n)
    expect(c.exchanges).toEqual(["/a 200", "/dav 207"])
    // The request started with its first byte's read.
    expect(starts).toEqual([10n, 30n])
    expect(c.dropped).toEqual([])
    // Not HTTP, a few bytes at a time: opaque once they cannot start a message.
    tracker.open(1, 9, undefined, 50n, undefined, undefined)
    tracker.data(1, 1, 9, "ingress", bytes("GE"), 2, 51n)
    tracker.data(1, 1, 9, "ingress", bytes("X / HTTP/1.1\r\n\r\n"), 16, 52n)
    tracker.data(1, 1, 9, "egress", response(200), response(200).byteLength, 53n)
    expect(c.exchanges).toHaveLength(2)
    expect(c.dropped).toEqual([])
  })

  it("ignores a response on an untracked socket that lost nothing (a connection from before tracing)", () => {
    const c = serverConnection()
    c.tracker.data(1, 1, 99, "egress", response(200), response(200).byteLength, 6n)
    expect(c.dropped).toEqual([])
    expect(c.tracker.size).toBe(1)
  })
})
