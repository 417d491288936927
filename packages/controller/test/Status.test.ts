import { describe, expect, it } from "@effect/vitest"
import * as Status from "../src/Status.js"

const deployment = (replicas: number | undefined, ready: number) => ({
  spec: replicas === undefined ? {} : { replicas },
  status: { readyReplicas: ready }
})

describe("Status", () => {
  it("is Progressing until every component has its replicas ready, then Ready", () => {
    const progressing = Status.compute(
      {
        generation: 2,
        components: [
          { name: "auth", deployment: deployment(3, 1) },
          { name: "profile", deployment: undefined }
        ]
      },
      undefined,
      "2026-01-01T00:00:00Z"
    )
    expect(progressing.ready).toBe("0/2")
    expect(progressing.components).toEqual([
      { name: "auth", desiredReplicas: 3, readyReplicas: 1 },
      { name: "profile", desiredReplicas: 0, readyReplicas: 0 }
    ])
    expect(progressing.conditions?.map((c) => [c.type, c.status, c.reason, c.observedGeneration])).toEqual([
      ["Ready", "False", "ComponentsNotReady", 2],
      ["Progressing", "True", "WaitingForReplicas", 2],
      ["Degraded", "False", "AsExpected", 2]
    ])
    expect(progressing.conditions?.[0]?.message).toBe("waiting for auth 1/3, profile 0/0")

    const ready = Status.compute(
      {
        generation: 2,
        components: [
          { name: "auth", deployment: deployment(3, 3) },
          { name: "profile", deployment: deployment(undefined, 1) }
        ]
      },
      progressing,
      "2026-01-01T00:01:00Z"
    )
    expect(ready.ready).toBe("2/2")
    expect(ready.conditions?.map((c) => [c.type, c.status, c.lastTransitionTime])).toEqual([
      ["Ready", "True", "2026-01-01T00:01:00Z"],
      ["Progressing", "False", "2026-01-01T00:01:00Z"],
      // Unchanged status keeps its transition time.
      ["Degraded", "False", "2026-01-01T00:00:00Z"]
    ])
  })

  it("reports a problem as Degraded with its reason", () => {
    const s = Status.compute(
      {
        generation: 1,
        components: [],
        problem: { reason: "InvalidSpec", message: "spec.components[0].name: bad" }
      },
      undefined,
      "2026-01-01T00:00:00Z"
    )
    expect(s.conditions?.find((c) => c.type === "Degraded")).toMatchObject({
      status: "True",
      reason: "InvalidSpec"
    })
    expect(s.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      status: "False",
      reason: "InvalidSpec"
    })
  })
})
