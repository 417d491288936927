/**
 * Deciding whether a child needs a server-side apply. Two checks, both must pass to skip the write:
 * - every field the controller sets has the desired value in the live object (catches drift made by
 *   others; fields the server defaults or others own are ignored);
 * - the live object's `iii.io/applied-hash` annotation equals the hash of the desired object (catches
 *   fields the controller set last time and no longer wants, which a subset check cannot see).
 */
import { createHash } from "node:crypto"
import type { KubeObject } from "../KubeClient.js"

export const appliedHashAnnotation = "iii.io/applied-hash"

/** JSON with object keys sorted, so equal values print equally whatever their key order. */
export const canonical = (value: unknown): string =>
  JSON.stringify(value, (_, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        )
      : v
  )

const hashOf = (object: KubeObject) =>
  createHash("sha256").update(canonical(object)).digest("hex").slice(0, 16)

/** The desired object with its hash annotation, as it is applied. */
export const withAppliedHash = (desired: KubeObject): KubeObject => ({
  ...desired,
  metadata: {
    ...desired.metadata,
    annotations: { ...desired.metadata?.annotations, [appliedHashAnnotation]: hashOf(desired) }
  }
})

/** Whether `live` holds every field of `desired` with the same value (arrays: same length, element-wise). */
export const isSubset = (desired: unknown, live: unknown): boolean => {
  if (Array.isArray(desired)) {
    return (
      Array.isArray(live) && live.length === desired.length && desired.every((d, i) => isSubset(d, live[i]))
    )
  }
  if (desired !== null && typeof desired === "object") {
    if (live === null || typeof live !== "object" || Array.isArray(live)) return false
    const l = live as Record<string, unknown>
    return Object.entries(desired as Record<string, unknown>).every(([k, v]) => isSubset(v, l[k]))
  }
  return desired === live
}

/** Whether `live` already is what applying `applied` (from `withAppliedHash`) would make it. */
export const upToDate = (applied: KubeObject, live: KubeObject | undefined): boolean =>
  live !== undefined &&
  live.metadata?.annotations?.[appliedHashAnnotation] ===
    applied.metadata?.annotations?.[appliedHashAnnotation] &&
  isSubset(applied, live)
