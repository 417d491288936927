/**
 * One level-based, idempotent reconcile of one composition, keyed by namespace/name:
 * read the cached state, render the desired children, server-side apply only those that differ,
 * delete children that are no longer desired, rebuild the status and write it only when it changed.
 * Running it twice with nothing changed in between makes no write request.
 */
import { ServiceComposition } from "@iii/core"
import { Effect, Either } from "effect"
import type { KubeApiError } from "../Errors.js"
import {
  apiVersionOf,
  apply,
  KubeClient,
  type KubeObject,
  pathOf,
  type Resource,
  remove,
  resources
} from "../KubeClient.js"
import * as Render from "../Render.js"
import * as Status from "../Status.js"
import { canonical, upToDate, withAppliedHash } from "./Diff.js"
import type { Informer } from "./Informer.js"

export type ChildKind = "Deployment" | "Service" | "Ingress" | "HorizontalPodAutoscaler"
export const childKinds: ReadonlyArray<ChildKind> = [
  "Deployment",
  "Service",
  "Ingress",
  "HorizontalPodAutoscaler"
]

export interface Caches {
  readonly compositions: Informer
  /** Children by kind, indexed by owning composition key (`namespace/name`). */
  readonly children: Readonly<Record<ChildKind, Informer>>
}

/** Field manager that writes a scaled Deployment's first replica count, so `iii-controller` never owns it. */
export const bootstrapFieldManager = "iii-controller-bootstrap"

export type Outcome = "gone" | "reconciled"

interface ManagedFieldsEntry {
  readonly manager?: string
  readonly fieldsV1?: { readonly "f:spec"?: Record<string, unknown> }
}

/**
 * What the cache keeps of a child's managedFields (the largest part of most objects): only whether
 * `iii-controller` owns `spec.replicas`, which is all the reconciler asks.
 */
export const slimManagedFields = (o: KubeObject): KubeObject => {
  const meta = o.metadata
  if (meta?.managedFields === undefined) return o
  const managedFields = (meta.managedFields as ReadonlyArray<ManagedFieldsEntry>)
    .filter((m) => m.manager === Render.fieldManager && m.fieldsV1?.["f:spec"]?.["f:replicas"] !== undefined)
    .map((m) => ({ manager: m.manager, fieldsV1: { "f:spec": { "f:replicas": {} } } }))
  return { ...o, metadata: { ...meta, managedFields } }
}

/** Whether the controller's own field manager owns `spec.replicas` of a live Deployment. */
const ownsReplicas = (live: KubeObject) =>
  ((live.metadata?.managedFields ?? []) as ReadonlyArray<ManagedFieldsEntry>).some(
    (m) => m.manager === Render.fieldManager && m.fieldsV1?.["f:spec"]?.["f:replicas"] !== undefined
  )

const resourceOf = (kind: ChildKind): Resource => resources[kind]

const splitKey = (key: string) => {
  const slash = key.indexOf("/")
  return slash < 0
    ? { namespace: undefined, name: key }
    : { namespace: key.slice(0, slash), name: key.slice(slash + 1) }
}

const isOwnedBy = (child: KubeObject, uid: string | undefined) =>
  uid !== undefined &&
  (child.metadata?.ownerReferences ?? []).some((o) => o.controller === true && o.uid === uid)

const writeStatus = (raw: KubeObject, status: Status.Status, caches: Caches) =>
  Effect.flatMap(KubeClient, (k) =>
    k.request({
      method: "PATCH",
      path: pathOf(resources.ServiceComposition, raw.metadata?.namespace, raw.metadata?.name, "status"),
      contentType: "application/merge-patch+json",
      // Replaces the whole status (null first drops fields no longer computed, e.g. stale conditions).
      body: { status }
    })
  ).pipe(Effect.tap((updated) => Effect.sync(() => caches.compositions.upsert(updated))))

const statusChanged = (raw: KubeObject, next: Status.Status) =>
  canonical(raw.status ?? {}) !== canonical(next)

/** Reconciles `key`; "gone" when the composition no longer exists (its actor should stop). */
export const reconcile = (
  key: string,
  caches: Caches,
  settings: Render.RenderSettings,
  now: () => string = () => new Date().toISOString().replace(/\.\d+Z$/, "Z")
): Effect.Effect<Outcome, KubeApiError, KubeClient> =>
  Effect.gen(function* () {
    const { namespace, name } = splitKey(key)
    const raw = caches.compositions.get(namespace, name)
    if (raw === undefined || raw.metadata?.deletionTimestamp !== undefined) return "gone"
    const generation = raw.metadata?.generation ?? 0
    const previous = raw.status as Status.Status | undefined
    const componentNames = (
      (raw.spec as { components?: ReadonlyArray<{ name?: unknown }> } | undefined)?.components ?? []
    )
      .map((c) => c.name)
      .filter((n): n is string => typeof n === "string")
    const deploymentOf = (component: string) =>
      caches.children.Deployment.get(namespace, Render.childName(name, component))

    const report = (problem: Status.Problem) =>
      Effect.gen(function* () {
        const next = Status.compute(
          {
            generation,
            components: componentNames.map((n) => ({ name: n, deployment: deploymentOf(n) })),
            problem
          },
          previous,
          now()
        )
        if (statusChanged(raw, next)) yield* writeStatus(raw, next, caches)
      })

    // The CRD schema lets through what only the full schema and semantic checks catch; such a spec
    // changes nothing in the cluster.
    const { status: _status, ...withoutStatus } = raw
    const decoded = ServiceComposition.validate(withoutStatus)
    const issues = Either.isLeft(decoded) ? decoded.left : Render.semanticIssues(decoded.right)
    if (Either.isLeft(decoded) || issues.length > 0) {
      yield* report({
        reason: "InvalidSpec",
        message: issues.map((i) => `${i.path}: ${i.message}`).join("; ")
      })
      return "reconciled"
    }
    const composition = decoded.right
    const desired = Render.render(composition, settings).map(withAppliedHash)

    const applyChildren = Effect.gen(function* () {
      for (const object of desired) {
        const kind = object.kind as ChildKind
        const informer = caches.children[kind]
        const live = informer.get(namespace, object.metadata?.name ?? "")
        if (upToDate(object, live)) continue
        const applied = yield* apply(resourceOf(kind), object, { fieldManager: Render.fieldManager })
        informer.upsert(applied)
        // A scaled Deployment gets `min` replicas once, from a manager of its own: the autoscaler takes
        // it over from there, and `iii-controller` never owning it means its applies never reset it.
        const scaled = (object.spec as { replicas?: number }).replicas === undefined
        if (kind === "Deployment" && scaled && (live === undefined || ownsReplicas(live))) {
          const component = composition.spec.components.find(
            (c) => Render.childName(name, c.name) === object.metadata?.name
          )
          const bounds = component?.replicas
          const current = (live?.spec as { replicas?: number } | undefined)?.replicas ?? 1
          const replicas =
            bounds === undefined ? current : Math.min(Math.max(current, bounds.min), bounds.max)
          const bootstrapped = yield* apply(
            resources.Deployment,
            {
              apiVersion: apiVersionOf(resources.Deployment),
              kind: "Deployment",
              metadata: { name: object.metadata?.name ?? "", namespace: object.metadata?.namespace ?? "" },
              spec: { replicas }
            },
            { fieldManager: bootstrapFieldManager }
          )
          informer.upsert(bootstrapped)
        }
      }
      const wanted = new Set(desired.map((o) => `${o.kind}/${o.metadata?.name}`))
      for (const kind of childKinds) {
        for (const child of caches.children[kind].byIndex(key)) {
          if (wanted.has(`${kind}/${child.metadata?.name}`) || !isOwnedBy(child, raw.metadata?.uid)) continue
          yield* remove(resourceOf(kind), child.metadata?.namespace, child.metadata?.name ?? "")
          caches.children[kind].forget(child.metadata?.namespace, child.metadata?.name ?? "")
        }
      }
    })
    const applied = yield* Effect.either(applyChildren)
    if (Either.isLeft(applied)) {
      yield* report({ reason: "ApplyFailed", message: applied.left.message })
      return yield* Effect.fail(applied.left)
    }

    const next = Status.compute(
      {
        generation,
        components: composition.spec.components.map((c) => ({
          name: c.name,
          deployment: deploymentOf(c.name)
        }))
      },
      previous,
      now()
    )
    if (statusChanged(raw, next)) yield* writeStatus(raw, next, caches)
    return "reconciled" as const
  })
