/**
 * The iii controller as an Effect Layer: informers for ServiceCompositions and their children, one
 * reconciler actor per composition (while this instance holds the leader Lease), per-key exponential
 * backoff plus a global rate limit on retries, and a bound on concurrent reconciles.
 *
 * Informer callbacks only enqueue `namespace/name`; everything else happens in the actor of that key.
 */
import { Config, Context, Duration, Effect, Layer, Option, Ref, type Scope } from "effect"
import * as Autoscaler from "./Autoscaler.js"
import * as Actors from "./internal/Actors.js"
import { type Informer, make as makeInformer, objectKey } from "./internal/Informer.js"
import {
  type Caches,
  type ChildKind,
  childKinds,
  reconcile,
  slimManagedFields
} from "./internal/Reconcile.js"
import { KubeClient, type KubeObject, resources } from "./KubeClient.js"
import * as LeaderElection from "./LeaderElection.js"
import * as Render from "./Render.js"

export interface Settings {
  /** Namespace to watch; all namespaces when undefined. */
  readonly namespace: string | undefined
  readonly render: Render.RenderSettings
  /** Leader election; undefined runs unconditionally (a single instance, or tests). */
  readonly leaderElection: LeaderElection.Settings | undefined
  /** Per-key retry backoff: doubles from `initial` up to `max`. */
  readonly backoff: { readonly initial: Duration.Duration; readonly max: Duration.Duration }
  /** Global limit on retries across all keys (token bucket). */
  readonly retryRateLimit: { readonly perSecond: number; readonly burst: number }
  /** Reconciles running at once. */
  readonly concurrency: number
  /** The own scaling loop, used when `render.scaling` is `controller`. */
  readonly autoscaler: Autoscaler.Settings
}

/** Defaults: all namespaces, HPA + sidecar, backoff 5 ms → 60 s, retries 10/s (burst 100), 8 reconciles at once. */
export const defaultSettings: Settings = {
  namespace: undefined,
  render: Render.defaultRenderSettings,
  leaderElection: undefined,
  backoff: { initial: Duration.millis(5), max: Duration.seconds(60) },
  retryRateLimit: { perSecond: 10, burst: 100 },
  concurrency: 8,
  autoscaler: Autoscaler.defaultSettings
}

/**
 * How the controller renders, from `III_SCALING`, `III_AGENT_MODE`, `III_AGENT_IMAGE` and `III_OBS_URL` (see
 * `settingsFromEnv`). `iii render` reads the same variables, so it prints what a controller with them applies.
 */
export const renderSettingsFromEnv: Config.Config<Render.RenderSettings> = Config.all({
  scaling: Config.literal(
    "hpa",
    "controller"
  )("III_SCALING").pipe(Config.withDefault(Render.defaultRenderSettings.scaling)),
  agentMode: Config.literal(
    "node",
    "sidecar"
  )("III_AGENT_MODE").pipe(Config.withDefault(Render.defaultRenderSettings.agentMode)),
  agentImage: Config.string("III_AGENT_IMAGE").pipe(
    Config.withDefault(Render.defaultRenderSettings.agentImage)
  ),
  obsUrl: Config.string("III_OBS_URL").pipe(Config.withDefault(Render.defaultRenderSettings.obsUrl))
})

/**
 * Settings from the environment (what the Deployment in manifests/ sets):
 * - `III_NAMESPACE`: namespace to watch (default: all)
 * - `III_SCALING`: `hpa` (default) or `controller` (the controller's own scaling loop)
 * - `III_AGENT_MODE`: `node` (default: the agent DaemonSet traces the pods; nothing injected) or
 *   `sidecar` (the agent injected into every pod)
 * - `III_AGENT_IMAGE`: the sidecar image (default `ghcr.io/iii-io/iii-agent:0.1.0`; the Deployment in
 *   manifests/ sets it from kustomize's `images:`, so it follows the iii-agent image installed)
 * - `III_OBS_URL`: obs' base URL agents send telemetry to (default `ws://iii-obs.iii-system.svc:4320`)
 * - `III_LEADER_ELECTION`: `true` (default) or `false`
 * - `III_LEASE_NAMESPACE`: namespace of the Lease (default: the controller's own namespace)
 * - `III_CONCURRENCY`: reconciles at once (default 8)
 * - `III_OBS_METRICS_URL`: obs' HTTP base for the own scaling loop (default `http://iii-obs.iii-system.svc:4320`)
 * - `III_OBS_TOKEN`: bearer token for obs, if it requires one
 */
export const settingsFromEnv = (ownNamespace: string): Config.Config<Settings> =>
  Config.all({
    namespace: Config.option(Config.string("III_NAMESPACE")),
    render: renderSettingsFromEnv,
    leaderElection: Config.boolean("III_LEADER_ELECTION").pipe(Config.withDefault(true)),
    leaseNamespace: Config.string("III_LEASE_NAMESPACE").pipe(Config.withDefault(ownNamespace)),
    concurrency: Config.integer("III_CONCURRENCY").pipe(Config.withDefault(defaultSettings.concurrency)),
    obsMetricsUrl: Config.string("III_OBS_METRICS_URL").pipe(
      Config.withDefault(Autoscaler.defaultSettings.obsUrl)
    ),
    obsToken: Config.option(Config.string("III_OBS_TOKEN"))
  }).pipe(
    Config.map(
      (c): Settings => ({
        ...defaultSettings,
        // An empty III_NAMESPACE (as a manifest may leave it) means all namespaces too.
        namespace: Option.getOrUndefined(Option.filter(c.namespace, (ns) => ns !== "")),
        render: c.render,
        leaderElection: c.leaderElection ? LeaderElection.defaults(c.leaseNamespace) : undefined,
        concurrency: c.concurrency,
        autoscaler: {
          ...Autoscaler.defaultSettings,
          obsUrl: c.obsMetricsUrl,
          obsToken: Option.getOrUndefined(c.obsToken)
        }
      })
    )
  )

export class Controller extends Context.Tag("@iii/controller/Controller")<
  Controller,
  {
    /** Asks for a reconcile of `namespace/name` (what informer callbacks do). */
    readonly enqueue: (key: string) => void
    /** Enqueues every cached composition (a full resync; level-based reconciles make it harmless). */
    readonly resync: Effect.Effect<void>
    /** Whether this instance currently reconciles (holds the Lease, or runs without election). */
    readonly isLeader: Effect.Effect<boolean>
    /** Keys with a running actor. */
    readonly actorKeys: Effect.Effect<ReadonlyArray<string>>
    /** Completes when every informer has listed once. */
    readonly synced: Effect.Effect<void>
    /** Reconciles done so far (successful or not), for tests and the benchmark. */
    readonly reconciles: Effect.Effect<number>
  }
>() {}

const ownerKey = (o: KubeObject) => {
  const composition = o.metadata?.labels?.[Render.compositionLabel]
  return composition === undefined ? undefined : objectKey(o.metadata?.namespace, composition)
}

/** Starts the controller in the current scope. */
export const make = (
  settings: Settings
): Effect.Effect<Context.Tag.Service<Controller>, never, KubeClient | Scope.Scope> =>
  Effect.gen(function* () {
    // The leader's actors; undefined while not leading, when keys are dropped (becoming leader
    // enqueues every composition anyway).
    let leader: Actors.Actors | undefined
    const enqueue = (key: string) => leader?.enqueue(key)
    const reconciles = yield* Ref.make(0)

    const compositions = yield* makeInformer({
      resource: resources.ServiceComposition,
      ...(settings.namespace === undefined ? {} : { namespace: settings.namespace }),
      transform: slimManagedFields,
      onChange: (o) => enqueue(objectKey(o.metadata?.namespace, o.metadata?.name ?? ""))
    })
    const children = {} as Record<ChildKind, Informer>
    for (const kind of childKinds) {
      children[kind] = yield* makeInformer({
        resource: resources[kind],
        ...(settings.namespace === undefined ? {} : { namespace: settings.namespace }),
        labelSelector: `${Render.managedByLabel}=${Render.fieldManager}`,
        indexBy: ownerKey,
        transform: slimManagedFields,
        onChange: (o) => {
          const key = ownerKey(o)
          if (key !== undefined) enqueue(key)
        }
      })
    }
    const caches: Caches = { compositions, children }
    const synced = Effect.all([compositions.synced, ...childKinds.map((k) => children[k].synced)], {
      discard: true
    })
    const client = yield* KubeClient

    // The leader's work: actors for every key, gone when leadership (this scope) ends.
    const whileLeader = Effect.gen(function* () {
      yield* synced
      const actors = yield* Actors.make({
        backoff: settings.backoff,
        retryRateLimit: settings.retryRateLimit,
        concurrency: settings.concurrency,
        reconcile: (key) =>
          reconcile(key, caches, settings.render).pipe(
            Effect.ensuring(Ref.update(reconciles, (n) => n + 1)),
            Effect.provideService(KubeClient, client)
          )
      })
      leader = actors
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          leader = undefined
        })
      )
      for (const o of compositions.list()) enqueue(objectKey(o.metadata?.namespace, o.metadata?.name ?? ""))
      if (settings.render.scaling === "controller") {
        yield* Effect.forkScoped(
          Autoscaler.run(settings.autoscaler, compositions, children.Deployment).pipe(
            Effect.provideService(KubeClient, client)
          )
        )
      }
      return yield* Effect.never
    })

    if (settings.leaderElection === undefined) yield* Effect.forkScoped(Effect.scoped(whileLeader))
    else yield* Effect.forkScoped(LeaderElection.run(settings.leaderElection, whileLeader))

    return {
      enqueue,
      resync: Effect.sync(() => {
        for (const o of compositions.list()) enqueue(objectKey(o.metadata?.namespace, o.metadata?.name ?? ""))
      }),
      isLeader: Effect.sync(() => leader !== undefined),
      actorKeys: Effect.suspend(() => leader?.keys ?? Effect.succeed([])),
      synced,
      reconciles: Ref.get(reconciles)
    }
  })

/** The controller as a Layer over a `KubeClient`; it runs until the layer is released. */
export const layer = (settings: Settings = defaultSettings): Layer.Layer<Controller, never, KubeClient> =>
  Layer.scoped(Controller, make(settings))
