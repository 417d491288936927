const otlpSignals = ["traces", "logs", "metrics"]

/** The node's own figures, exposed on `/metrics` in the Prometheus text format. */
export class NodeCounters {
  connections = 0
  pausedConnections = 0
  bytesReceived = 0
  framesRejected = 0
  writeFailures = 0
  batchesStored = 0
  batchesDuplicate = 0
  batchesUnavailable = 0
  spansStored = 0
  logsStored = 0
  metricsStored = 0
  /** performance.now() at start: uptime does not follow wall-clock jumps. */
  readonly startedAt = performance.now()
  /** WebSocket upgrades refused, by `endpoint\u0000reason` (reasons: `unauthorized`, `cap`). */
  readonly upgradesRefused = new Map<string, number>()
  /** Connections the node closed for a reason of its own, by `endpoint\u0000reason`. */
  readonly connectionsClosed = new Map<string, number>()
  /** OTLP requests answered, by `signal\u0000status` (200 of each signal shown from the start). */
  readonly otlpRequests = new Map(otlpSignals.map((signal) => [`${signal}\u0000200`, 0]))
  /** Items of OTLP requests left out (partial successes), by `signal`. */
  readonly otlpRejected = new Map(otlpSignals.map((signal) => [signal, 0]))

  /**
   * Shows an endpoint's refusals (`unauthorized`, `cap`) and the closes it makes at zero, so a
   * dashboard finds every series from the start.
   */
  endpoint(endpoint: string, closeReasons: ReadonlyArray<string>): void {
    for (const reason of ["unauthorized", "cap"]) bump(this.upgradesRefused, `${endpoint}\u0000${reason}`, 0)
    for (const reason of closeReasons) bump(this.connectionsClosed, `${endpoint}\u0000${reason}`, 0)
  }

  upgradeRefused(endpoint: string, reason: string): void {
    bump(this.upgradesRefused, `${endpoint}\u0000${reason}`)
  }

  connectionClosed(endpoint: string, reason: string): void {
    bump(this.connectionsClosed, `${endpoint}\u0000${reason}`)
  }

  otlpAnswered(signal: string, status: number): void {
    bump(this.otlpRequests, `${signal}\u0000${status}`)
  }

  otlpLeftOut(signal: string, items: number): void {
    if (items > 0) bump(this.otlpRejected, signal, items)
  }
}

const bump = (counts: Map<string, number>, key: string, by = 1) => {
  counts.set(key, (counts.get(key) ?? 0) + by)
}

/** A counter per label set; `counts` is keyed by the label values joined with NUL, in `labels` order. */
export const labelled = (
  name: string,
  help: string,
  counts: ReadonlyMap<string, number>,
  labels: ReadonlyArray<string> = ["endpoint", "reason"]
) => {
  const lines = Array.from(counts.keys(), (key) => {
    const values = key.split("\u0000")
    const set = labels.map((label, i) => `${label}="${values[i]}"`).join(",")
    return `${name}{${set}} ${counts.get(key) ?? 0}\n`
  })
  return `# HELP ${name} ${help}\n# TYPE ${name} counter\n${lines.join("")}`
}

export interface Gauges {
  readonly queueDepth: number
  readonly commits: number
  readonly tailSubscribers: number
  readonly tailDelivered: number
  readonly tailDropped: number
  readonly bytesStored: number
  readonly spansInStore: number
  readonly storeFailed: boolean
}

/** One metric in the Prometheus text format. */
export const line = (name: string, type: "counter" | "gauge", help: string, value: number) =>
  `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${value}\n`

export const renderPrometheus = (c: NodeCounters, g: Gauges): string =>
  [
    line("iii_obs_spans_ingested_total", "counter", "Spans stored (duplicates excluded).", c.spansStored),
    line("iii_obs_logs_ingested_total", "counter", "Log records stored.", c.logsStored),
    line("iii_obs_metric_points_ingested_total", "counter", "Metric points stored.", c.metricsStored),
    line("iii_obs_batches_stored_total", "counter", "Batches stored.", c.batchesStored),
    line(
      "iii_obs_batches_duplicate_total",
      "counter",
      "Re-sent batches acknowledged without storing.",
      c.batchesDuplicate
    ),
    line(
      "iii_obs_batches_unavailable_total",
      "counter",
      "Batches refused for want of a write quorum (the agent resends them).",
      c.batchesUnavailable
    ),
    line("iii_obs_commits_total", "counter", "LMDB write transactions committed by ingest.", g.commits),
    line("iii_obs_ingest_bytes_total", "counter", "Frame bytes received on /v1/ingest.", c.bytesReceived),
    line(
      "iii_obs_frames_rejected_total",
      "counter",
      "Frames answered with an error frame.",
      c.framesRejected
    ),
    line("iii_obs_write_failures_total", "counter", "Batches whose transaction failed.", c.writeFailures),
    line(
      "iii_obs_store_failed",
      "gauge",
      "1 once the store can no longer keep what it acknowledges (data directory deleted or replaced): the node is not ready and acknowledges nothing.",
      g.storeFailed ? 1 : 0
    ),
    line("iii_obs_ingest_connections", "gauge", "Open ingest connections.", c.connections),
    labelled(
      "iii_obs_connections_refused_total",
      "WebSocket upgrades refused: without the token (unauthorized) or at the endpoint's connection cap (cap).",
      c.upgradesRefused
    ),
    labelled(
      "iii_obs_connections_closed_total",
      "Connections the node closed: no hello in time, no answer to pings, or a tail subscriber stalled at a full buffer.",
      c.connectionsClosed
    ),
    labelled(
      "iii_obs_otlp_requests_total",
      "OTLP export requests answered, by signal and HTTP status (gRPC answers under the HTTP status of the same meaning).",
      c.otlpRequests,
      ["signal", "status"]
    ),
    labelled(
      "iii_obs_otlp_items_rejected_total",
      "Spans, log records and metric points of OTLP requests left out (reported as partial successes).",
      c.otlpRejected,
      ["signal"]
    ),
    line(
      "iii_obs_ingest_paused_connections",
      "gauge",
      "Ingest connections paused by back-pressure.",
      c.pausedConnections
    ),
    line(
      "iii_obs_ingest_queue_depth",
      "gauge",
      "Spans, logs and points queued or being written.",
      g.queueDepth
    ),
    line("iii_obs_store_bytes", "gauge", "Bytes used by the LMDB environment.", g.bytesStored),
    line("iii_obs_store_spans", "gauge", "Spans in the store.", g.spansInStore),
    line("iii_obs_tail_subscribers", "gauge", "Live tail subscribers.", g.tailSubscribers),
    line("iii_obs_tail_spans_delivered_total", "counter", "Spans sent to tail subscribers.", g.tailDelivered),
    line(
      "iii_obs_tail_spans_dropped_total",
      "counter",
      "Spans dropped for slow tail subscribers.",
      g.tailDropped
    ),
    line(
      "iii_obs_uptime_seconds",
      "gauge",
      "Seconds since the node started.",
      Math.floor((performance.now() - c.startedAt) / 1000)
    )
  ].join("")
