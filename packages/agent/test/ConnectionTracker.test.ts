import { describe, expect, it } from "vitest"
import { ConnectionTracker } from "../src/ConnectionTracker.js"

describe("ConnectionTracker", () => {
  it("bounds the connection table: the oldest connection is ended when it is full", () => {
    const ended: Array<number> = []
    const tracker = new ConnectionTracker<undefined>(
      {
        onRequest: () => {},
        onExchange: () => {},
        onConnectionEnd: (connection) => ended.push(connection.fd)
      },
      { maxConnections: 3 }
    )
    for (let fd = 10; fd < 15; fd++) tracker.open(1, fd, "server", BigInt(fd), undefined, undefined)
    expect(tracker.size).toBe(3)
    expect(ended).toEqual([10, 11])
    expect(tracker.evicted).toBe(2)
  })
})
