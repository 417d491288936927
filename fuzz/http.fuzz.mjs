// Fuzz target: the agent's HTTP/1 parser under its stream reassembly (ConnectionTracker), fed as the
// kernel feeds them: connections opened and closed, each syscall's captured bytes, and bytes moved
// but not captured, in any order. Nothing may throw; every exchange answers a request seen before;
// tracked connections stay within the cap.
import { ConnectionTracker } from "../packages/agent/dist/internal/ConnectionTracker.js"

const maxConnections = 8

/** Reads the input as a list of operations; the first byte of each says which. */
export function fuzz(data) {
  let requests = 0
  let exchanges = 0
  const events = {
    onRequest: () => {
      requests++
    },
    onExchange: (exchange) => {
      exchanges++
      const status = exchange.response?.statusCode
      if (status !== undefined && !(status >= 100 && status <= 999)) throw new Error(`status ${status}`)
    }
  }
  // Events the harness does not check are answered by a no-op, so a new one (such as onDropped)
  // does not break it.
  const tracker = new ConnectionTracker(
    new Proxy(events, { get: (target, name) => target[name] ?? (() => undefined) }),
    { maxConnections, maxPendingPerConnection: 16 }
  )
  let at = 0
  let now = 1_000n
  const byte = () => data[at++] ?? 0
  while (at < data.length) {
    const op = byte()
    const fd = op & 3
    now += BigInt(byte())
    switch ((op >> 2) % 4) {
      case 0:
        tracker.open(1, fd, op & 16 ? "server" : "client", now, undefined, undefined)
        break
      case 1:
      case 2: {
        const length = byte()
        const payload = data.subarray(at, at + length)
        at += length
        // Sometimes the syscall moved more than was captured.
        const uncaptured = op & 32 ? byte() * 64 : 0
        tracker.data(1, 7, fd, op & 64 ? "ingress" : "egress", payload, payload.length + uncaptured, now)
        break
      }
      default:
        tracker.close(1, fd, now)
    }
    if (tracker.size > maxConnections) throw new Error(`${tracker.size} connections tracked`)
  }
  for (let fd = 0; fd < 4; fd++) tracker.close(1, fd, now)
  if (exchanges > requests) throw new Error(`${exchanges} exchanges for ${requests} requests`)
}
