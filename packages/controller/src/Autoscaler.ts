/**
 * The controller's own scaling loop, for clusters whose single `external.metrics.k8s.io` slot is
 * taken (KEDA, another adapter): with `scaling: "controller"` it reads the same metrics from obs'
 * External Metrics API over HTTP and writes each scaled Deployment's `scale` subresource, following
 * the HPA's algorithm and default behaviour:
 * - desired = ceil(current · value / target) for a Value target (percentiles, error rate),
 *   ceil(value / target) for an AverageValue target (request rate per replica); no change within a
 *   10 % tolerance; clamped to the component's [min, max];
 * - scale up at once; scale down only to the highest recommendation of the last 5 minutes.
 * CPU policies keep their HPA in this mode: CPU comes from metrics.k8s.io, not from the external slot.
 */
import { Quantity } from "@iii/core"
import { Duration, Effect, Either, Option } from "effect"
import { KubeApiError } from "./Errors.js"
import type { Informer } from "./internal/Informer.js"
import { KubeClient, type KubeObject, pathOf, resources } from "./KubeClient.js"
import * as Render from "./Render.js"

/** A Kubernetes quantity as a number (`187`, `250500m`, `1.5k`); undefined when unparsable. */
export const parseQuantity = (text: string): number | undefined => {
  const m = /^(-?\d+(?:\.\d+)?)(m|k|M|G)?$/.exec(text.trim())
  if (m === null) return undefined
  const scale = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ""] ?? 1
  return Number(m[1]) * scale
}

export interface Target {
  readonly type: "Value" | "AverageValue"
  readonly value: number
}

/** The HPA's replica recommendation for one metric reading. */
export const recommend = (
  current: number,
  metric: number,
  target: Target,
  bounds: { readonly min: number; readonly max: number },
  tolerance = 0.1
): number => {
  const clamp = (n: number) => Math.min(bounds.max, Math.max(bounds.min, n))
  if (current === 0) return clamp(0)
  const ratio = target.type === "Value" ? metric / target.value : metric / (target.value * current)
  if (Math.abs(ratio - 1) <= tolerance) return clamp(current)
  return clamp(Math.ceil(target.type === "Value" ? current * ratio : metric / target.value))
}

export interface Recommendation {
  readonly at: number
  readonly replicas: number
}

/**
 * Applies the default HPA behaviour to a new recommendation: up at once, down to the highest
 * recommendation within `window` (5 minutes). Returns the replicas to run and the history to keep.
 */
export const stabilize = (
  history: ReadonlyArray<Recommendation>,
  now: number,
  recommended: number,
  window: Duration.Duration = Duration.minutes(5)
): { readonly replicas: number; readonly history: ReadonlyArray<Recommendation> } => {
  const kept = [
    ...history.filter((r) => r.at > now - Duration.toMillis(window)),
    { at: now, replicas: recommended }
  ]
  return { replicas: Math.max(...kept.map((r) => r.replicas)), history: kept }
}

/** Target of a scaling policy in the units obs reports, or None for cpu (left to an HPA). */
export const targetOf = (policy: {
  readonly metric: string
  readonly threshold: {
    readonly kind: string
    readonly milliseconds?: number
    readonly percent?: number
    readonly perSecond?: number
  }
}): Option.Option<{ readonly metricName: string; readonly target: Target }> => {
  const t = policy.threshold
  switch (policy.metric) {
    case "p99_latency":
    case "p95_latency":
    case "p50_latency":
      return Option.some({
        metricName: Render.externalMetricNames[policy.metric],
        target: { type: "Value", value: t.milliseconds ?? 0 }
      })
    case "error_rate":
      return Option.some({ metricName: "iii_error_rate", target: { type: "Value", value: t.percent ?? 0 } })
    case "request_rate":
      return Option.some({
        metricName: "iii_request_rate",
        target: { type: "AverageValue", value: t.perSecond ?? 0 }
      })
    default:
      return Option.none()
  }
}

export interface Settings {
  /** obs' HTTP base URL, serving /apis/external.metrics.k8s.io/v1beta1. Default `http://iii-obs.iii-system.svc:4320`. */
  readonly obsUrl: string
  /** Bearer token for obs, when it requires one. */
  readonly obsToken: string | undefined
  /** Time between evaluations. Default 15 s, the HPA's sync period. */
  readonly interval: Duration.Duration
  /** Scale-down stabilisation window. Default 5 minutes. */
  readonly downscaleWindow: Duration.Duration
}

export const defaultSettings: Settings = {
  obsUrl: "http://iii-obs.iii-system.svc:4320",
  obsToken: undefined,
  interval: Duration.seconds(15),
  downscaleWindow: Duration.minutes(5)
}

/** Field manager of the scale writes. */
export const fieldManager = "iii-autoscaler"

/** Reads one external metric from obs; None when obs has no item for the selector (no traffic seen). */
export const readMetric = (settings: Settings, namespace: string, metricName: string, selector: string) =>
  Effect.tryPromise({
    try: async () => {
      const url = `${settings.obsUrl}/apis/external.metrics.k8s.io/v1beta1/namespaces/${namespace}/${metricName}?labelSelector=${encodeURIComponent(selector)}`
      const response = await fetch(url, {
        headers: settings.obsToken === undefined ? {} : { authorization: `Bearer ${settings.obsToken}` }
      })
      if (!response.ok) throw new Error(`HTTP ${response.status}`)
      const body = (await response.json()) as { items?: ReadonlyArray<{ value?: string }> }
      const value = body.items?.[0]?.value
      return value === undefined ? Option.none<number>() : Option.fromNullable(parseQuantity(value))
    },
    catch: (e) =>
      new KubeApiError({
        method: "GET",
        path: metricName,
        status: 0,
        reason: "ObsUnreachable",
        message: `obs: ${String(e)}`
      })
  })

interface ScaledComponent {
  readonly namespace: string
  readonly deployment: string
  readonly selector: string
  readonly metricName: string
  readonly target: Target
  readonly bounds: { readonly min: number; readonly max: number }
}

/** Every component under a non-cpu scaling policy, from the cached compositions. */
const scaledComponents = (compositions: Informer): ReadonlyArray<ScaledComponent> => {
  const out: Array<ScaledComponent> = []
  for (const raw of compositions.list()) {
    const namespace = raw.metadata?.namespace ?? "default"
    const name = raw.metadata?.name ?? ""
    const spec = raw.spec as { components?: ReadonlyArray<Record<string, unknown>> } | undefined
    for (const component of spec?.components ?? []) {
      const policy = component.scalingPolicy as { metric: string; threshold: string } | undefined
      const replicas = component.replicas as { min: number; max: number } | undefined
      if (policy === undefined || replicas === undefined || typeof component.name !== "string") continue
      const threshold = parseThreshold(policy.threshold)
      if (threshold === undefined) continue
      const target = targetOf({ metric: policy.metric, threshold })
      if (Option.isNone(target)) continue
      out.push({
        namespace,
        deployment: Render.childName(name, component.name),
        selector: `${Render.compositionLabel}=${name},${Render.componentLabel}=${component.name}`,
        ...target.value,
        bounds: replicas
      })
    }
  }
  return out
}

// The loop reads raw cached objects; thresholds parse with core's Quantity, the one parser of units.
const parseThreshold = (text: string) => Either.getOrUndefined(Quantity.parse(text))

/**
 * Evaluates every scaled component every `interval` while it runs (the leader runs it); writes
 * `spec.replicas` through the scale subresource only when the stabilised recommendation differs.
 */
export const run = (settings: Settings, compositions: Informer, deployments: Informer) =>
  Effect.gen(function* () {
    const client = yield* KubeClient
    const histories = new Map<string, ReadonlyArray<Recommendation>>()
    const evaluate = (c: ScaledComponent) =>
      Effect.gen(function* () {
        const live: KubeObject | undefined = deployments.get(c.namespace, c.deployment)
        if (live === undefined) return
        const current = (live.spec as { replicas?: number } | undefined)?.replicas ?? 1
        const reading = yield* readMetric(settings, c.namespace, c.metricName, c.selector)
        if (Option.isNone(reading)) return
        const key = `${c.namespace}/${c.deployment}`
        const next = stabilize(
          histories.get(key) ?? [],
          Date.now(),
          recommend(current, reading.value, c.target, c.bounds),
          settings.downscaleWindow
        )
        histories.set(key, next.history)
        if (next.replicas === current) return
        yield* Effect.logInfo(
          `scaling ${key} from ${current} to ${next.replicas} (${c.metricName}=${reading.value})`
        )
        yield* client.request({
          method: "PATCH",
          path: pathOf(resources.Deployment, c.namespace, c.deployment, "scale"),
          query: { fieldManager },
          contentType: "application/merge-patch+json",
          body: { spec: { replicas: next.replicas } }
        })
      }).pipe(Effect.catchAll((e) => Effect.logWarning(`autoscaler ${c.deployment}: ${e.message}`)))
    while (true) {
      yield* Effect.forEach(scaledComponents(compositions), evaluate, { concurrency: 4, discard: true })
      yield* Effect.sleep(settings.interval)
    }
  })
