/**
 * RED metrics (rate, errors, duration) aggregated in the agent and flushed as MetricPoints each interval.
 *
 * HTTP: one distribution point per (span kind, method, route, status class) and interval, named
 * `http.server.request.duration` / `http.client.request.duration`, in milliseconds, carrying a
 * LatencySketch (the same sketch obs merges). Its value is the request count; the rate is
 * count / interval; the error rate is the 5xx (server) or 4xx+5xx (client) share, by status class.
 * Attributes: `http.request.method`, `http.route`, `iii.status_class` (`2xx`…, `none` without response).
 *
 * TCP (every connection, HTTP or not): counters `iii.tcp.connections`, `iii.tcp.bytes_received`,
 * `iii.tcp.bytes_sent` and a distribution `iii.tcp.connection.duration` (ms), per role
 * (`iii.connection.role` server|client), peer address (`network.peer.address`, at most `maxPeers` distinct,
 * then `{other}`) and protocol (`iii.protocol` http|unknown). Recorded when the connection ends.
 */
import * as LatencySketch from "@iii/core/LatencySketch"
import type * as Telemetry from "@iii/core/Telemetry"
import * as Conventions from "@iii/core/TelemetryConventions"
import type { Connection, Role } from "./ConnectionTracker.js"
import { type Identity, identityAttributes, resourceOf } from "./Spans.js"

interface HttpSeries {
  readonly role: Role
  readonly method: string
  readonly route: string
  readonly statusClass: Telemetry.StatusClass
  readonly sketch: LatencySketch.LatencySketch
}

interface TcpSeries {
  readonly role: Role
  readonly peer: string
  readonly protocol: "http" | "unknown"
  connections: number
  bytesIn: number
  bytesOut: number
  readonly duration: LatencySketch.LatencySketch
}

const nsToMs = (ns: number): number => ns / 1e6

/**
 * HTTP series by role, method and route, then by status class (0: none, 1–5: 1xx–5xx). Looked up
 * with the strings as they come, the route table's and the method's, whose hashes V8 keeps: a key
 * string built per request cost a concatenation and a hash of it every time (~4% of the agent's
 * main thread at saturation, packages/agent README "Agent CPU per request").
 */
type HttpSeriesByRoute = Map<string, Map<string, Array<HttpSeries | undefined>>>

const statusClassIndex = (statusCode: number | undefined): number =>
  statusCode === undefined || statusCode < 100 || statusCode > 599 ? 0 : Math.floor(statusCode / 100)

export class RedMetrics {
  private http: Record<Role, HttpSeriesByRoute> = { server: new Map(), client: new Map() }
  private tcp = new Map<string, TcpSeries>()
  private readonly peers = new Set<string>()
  private intervalStartNs: bigint

  constructor(
    private readonly identity: Identity,
    startNs: bigint,
    private readonly maxPeers = 200
  ) {
    this.intervalStartNs = startNs
  }

  recordRequest(
    role: Role,
    method: string,
    route: string,
    statusCode: number | undefined,
    durationNs: number
  ) {
    const byRoute = this.http[role]
    let routes = byRoute.get(method)
    if (routes === undefined) {
      routes = new Map()
      byRoute.set(method, routes)
    }
    let classes = routes.get(route)
    if (classes === undefined) {
      classes = []
      routes.set(route, classes)
    }
    const index = statusClassIndex(statusCode)
    let series = classes[index]
    if (series === undefined) {
      series = {
        role,
        method,
        route,
        statusClass: Conventions.statusClass(statusCode),
        sketch: LatencySketch.make()
      }
      classes[index] = series
    }
    series.sketch.add(nsToMs(durationNs))
  }

  recordConnection(connection: Connection, endNs: bigint) {
    const role = connection.role ?? "server"
    const address = connection.peer?.address ?? "unknown"
    let peer = address
    if (!this.peers.has(address)) {
      if (this.peers.size < this.maxPeers) this.peers.add(address)
      else peer = "{other}"
    }
    const protocol = connection.http ? "http" : "unknown"
    const key = `${role} ${peer} ${protocol}`
    let series = this.tcp.get(key)
    if (series === undefined) {
      series = {
        role,
        peer,
        protocol,
        connections: 0,
        bytesIn: 0,
        bytesOut: 0,
        duration: LatencySketch.make()
      }
      this.tcp.set(key, series)
    }
    series.connections++
    series.bytesIn += connection.bytesIn
    series.bytesOut += connection.bytesOut
    series.duration.add(nsToMs(Number(endNs - connection.openedNs)))
  }

  /** The points of the interval ending at `nowNs`; starts a new interval. */
  flush(nowNs: bigint): Array<Telemetry.MetricPoint> {
    const intervalNano = Math.max(0, Number(nowNs - this.intervalStartNs))
    this.intervalStartNs = nowNs
    const points: Array<Telemetry.MetricPoint> = []
    const base = { ...resourceOf(this.identity), timeUnixNano: nowNs, intervalNano }
    const shared = identityAttributes(this.identity)
    for (const series of this.httpSeries()) {
      const sketch = series.sketch.toData()
      points.push({
        ...base,
        name: series.role === "server" ? "http.server.request.duration" : "http.client.request.duration",
        kind: "distribution",
        value: sketch.count,
        sketch,
        attributes: {
          ...shared,
          "http.request.method": series.method,
          "http.route": series.route,
          "iii.status_class": series.statusClass
        }
      })
    }
    for (const series of this.tcp.values()) {
      const attributes = {
        ...shared,
        "iii.connection.role": series.role,
        "network.peer.address": series.peer,
        "iii.protocol": series.protocol
      }
      const counter = (name: string, value: number): Telemetry.MetricPoint => ({
        ...base,
        name,
        kind: "counter",
        value,
        attributes
      })
      points.push(counter("iii.tcp.connections", series.connections))
      points.push(counter("iii.tcp.bytes_received", series.bytesIn))
      points.push(counter("iii.tcp.bytes_sent", series.bytesOut))
      const duration = series.duration.toData()
      points.push({
        ...base,
        name: "iii.tcp.connection.duration",
        kind: "distribution",
        value: duration.count,
        sketch: duration,
        attributes
      })
    }
    this.http = { server: new Map(), client: new Map() }
    this.tcp = new Map()
    return points
  }

  private *httpSeries(): Generator<HttpSeries> {
    for (const byRoute of [this.http.server, this.http.client])
      for (const routes of byRoute.values())
        for (const classes of routes.values())
          for (const series of classes) if (series !== undefined) yield series
  }
}
