import { describe, expect, it } from "@effect/vitest"
import {
  appliedHashAnnotation,
  canonical,
  isSubset,
  upToDate,
  withAppliedHash
} from "../src/internal/Diff.js"
import type { KubeObject } from "../src/KubeClient.js"

const desired: KubeObject = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "a-b", namespace: "ns", labels: { x: "1" } },
  spec: { ports: [{ name: "http", port: 8080 }] }
}

describe("Diff", () => {
  it("prints equal objects equally whatever their key order", () => {
    expect(canonical({ b: 1, a: { d: 2, c: [3, { f: 1, e: 2 }] } })).toBe(
      canonical({ a: { c: [3, { e: 2, f: 1 }], d: 2 }, b: 1 })
    )
  })

  it("treats server-added fields as no difference, changed or missing ones as a difference", () => {
    const live = {
      ...desired,
      spec: { clusterIP: "10.0.0.3", ports: [{ name: "http", port: 8080, protocol: "TCP" }] }
    }
    expect(isSubset(desired, live)).toBe(true)
    expect(isSubset(desired, { ...live, spec: { ports: [{ name: "http", port: 9090 }] } })).toBe(false)
    expect(isSubset(desired, { ...live, spec: { ports: [] } })).toBe(false)
    expect(isSubset({ a: [1] }, { a: [1, 2] })).toBe(false)
  })

  it("is up to date only when the live object carries the hash of what would be applied", () => {
    const applied = withAppliedHash(desired)
    const hash = applied.metadata?.annotations?.[appliedHashAnnotation]
    expect(hash).toMatch(/^[0-9a-f]{16}$/)
    expect(upToDate(applied, { ...applied, status: {} })).toBe(true)
    expect(upToDate(applied, undefined)).toBe(false)
    // A field set last time and no longer desired leaves an old hash behind.
    const before = withAppliedHash({
      ...desired,
      metadata: { ...desired.metadata, labels: { x: "1", y: "2" } }
    })
    expect(
      upToDate(applied, {
        ...before,
        metadata: { ...before.metadata, annotations: before.metadata?.annotations ?? {} }
      })
    ).toBe(false)
  })
})
