/**
 * A composition's status, rebuilt from what the cluster shows on every reconcile (never from memory):
 * per-component desired/ready replicas read off the Deployments, and the conditions
 * `Ready`, `Progressing`, `Degraded` (Kubernetes API conventions: reason, message, observedGeneration,
 * lastTransitionTime kept while the status stays the same).
 */
import type { ServiceComposition as SC } from "@iii/core"
import type { KubeObject } from "./KubeClient.js"

export type Status = SC.Status
export type Condition = SC.Condition

/** Why a composition cannot be reconciled: shown as `Degraded=True` with this reason and message. */
export interface Problem {
  readonly reason: "InvalidSpec" | "ApplyFailed"
  readonly message: string
}

export interface Observed {
  readonly generation: number
  /** Each component with its Deployment as the cluster shows it (undefined: not created yet). */
  readonly components: ReadonlyArray<{ readonly name: string; readonly deployment: KubeObject | undefined }>
  readonly problem?: Problem
}

interface DeploymentView {
  readonly spec?: { readonly replicas?: number }
  readonly status?: { readonly readyReplicas?: number }
}

const replicasOf = (deployment: KubeObject | undefined) => {
  const d = deployment as DeploymentView | undefined
  return {
    // An absent `replicas` means 1 (the API default) once the Deployment exists.
    desiredReplicas: d === undefined ? 0 : (d.spec?.replicas ?? 1),
    readyReplicas: d?.status?.readyReplicas ?? 0
  }
}

const condition = (
  type: Condition["type"],
  status: boolean,
  reason: string,
  message: string,
  generation: number,
  previous: ReadonlyArray<Condition>,
  now: string
): Condition => {
  const value = status ? "True" : "False"
  const before = previous.find((c) => c.type === type)
  return {
    type,
    status: value,
    observedGeneration: generation,
    lastTransitionTime: before !== undefined && before.status === value ? before.lastTransitionTime : now,
    reason,
    message
  }
}

/** The status that describes `observed`; `previous` only lends lastTransitionTimes. */
export const compute = (observed: Observed, previous: Status | undefined, now: string): Status => {
  const prior = previous?.conditions ?? []
  const gen = observed.generation
  const components = observed.components.map((c) => ({ name: c.name, ...replicasOf(c.deployment) }))
  const waiting = observed.components
    .map((c) => ({ name: c.name, exists: c.deployment !== undefined, ...replicasOf(c.deployment) }))
    .filter((c) => !c.exists || c.readyReplicas < c.desiredReplicas)
  const readyCount = components.length - waiting.length
  const base = {
    observedGeneration: gen,
    components,
    componentCount: components.length,
    ready: `${readyCount}/${components.length}`
  }
  const p = observed.problem
  if (p !== undefined) {
    return {
      ...base,
      conditions: [
        condition("Ready", false, p.reason, p.message, gen, prior, now),
        condition("Progressing", false, p.reason, p.message, gen, prior, now),
        condition("Degraded", true, p.reason, p.message, gen, prior, now)
      ]
    }
  }
  const allReady = waiting.length === 0
  const waitingText = waiting.map((c) => `${c.name} ${c.readyReplicas}/${c.desiredReplicas}`).join(", ")
  return {
    ...base,
    conditions: [
      condition(
        "Ready",
        allReady,
        allReady ? "AllComponentsReady" : "ComponentsNotReady",
        allReady ? `all ${components.length} components ready` : `waiting for ${waitingText}`,
        gen,
        prior,
        now
      ),
      condition(
        "Progressing",
        !allReady,
        allReady ? "Converged" : "WaitingForReplicas",
        allReady ? "children applied and ready" : `children applied; waiting for ${waitingText}`,
        gen,
        prior,
        now
      ),
      condition("Degraded", false, "AsExpected", "reconciled without errors", gen, prior, now)
    ]
  }
}
