/**
 * The 10 live-tail subscribers of `bench:tail`, in their own process: `node bench/obs-tail-subscribers.ts
 * WS_URL`. Prints `ready` once all are connected; when stdin ends, prints one JSON line with every
 * message's commit-to-receipt latency (ms), spans delivered and spans dropped, and exits.
 */
import { Unpackr } from "msgpackr"
import WebSocket from "ws"

const wsUrl = process.argv[2]
if (wsUrl === undefined) throw new Error("usage: node bench/obs-tail-subscribers.ts WS_URL")

interface Subscriber {
  ws: WebSocket
  spans: number
  latencies: Array<number>
  dropped: number
}

const unpackr = new Unpackr({ useRecords: false })
const subscribe = (query: string) =>
  new Promise<Subscriber>((resolve, reject) => {
    const ws = new WebSocket(`${wsUrl}/v1/tail?${query}`, { perMessageDeflate: false })
    const sub: Subscriber = { ws, spans: 0, latencies: [], dropped: 0 }
    ws.on("message", (data: Buffer, isBinary) => {
      const receivedAt = performance.timeOrigin + performance.now()
      if (isBinary) {
        const msg = unpackr.unpack(data) as {
          type: string
          committedAt?: number
          spans?: Array<unknown>
          dropped?: number
        }
        if (msg.type === "dropped") sub.dropped += msg.dropped ?? 0
        else {
          sub.latencies.push(receivedAt - (msg.committedAt ?? receivedAt))
          sub.spans += msg.spans?.length ?? 0
        }
        return
      }
      const head = /^\{"type":"(\w+)","(?:committedAt|dropped)":([\d.]+)(?:,"count":(\d+))?/.exec(
        data.subarray(0, 120).toString("latin1")
      )
      if (head?.[1] === "dropped") sub.dropped += Number(head[2])
      else if (head?.[1] === "spans") {
        sub.latencies.push(receivedAt - Number(head[2]))
        sub.spans += Number(head[3])
      }
    })
    ws.once("open", () => resolve(sub))
    ws.once("error", reject)
  })

const subscribers = await Promise.all([
  ...Array.from({ length: 7 }, () => subscribe("")),
  subscribe("format=msgpack"),
  subscribe("status=5xx"),
  subscribe("service=checkout")
])
process.stdout.write("ready\n")
process.stdin.resume()
process.stdin.on("end", () => {
  for (const s of subscribers) s.ws.close()
  process.stdout.write(
    `${JSON.stringify({
      latencies: subscribers.flatMap((s) => s.latencies),
      delivered: subscribers.reduce((n, s) => n + s.spans, 0),
      dropped: subscribers.reduce((n, s) => n + s.dropped, 0)
    })}\n`,
    () => process.exit(0)
  )
})
