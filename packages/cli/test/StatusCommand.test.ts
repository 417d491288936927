import { describe, expect, it } from "@effect/vitest"
import { detailTables, summaryTable } from "../src/StatusCommand.js"

const composition = {
  metadata: { name: "user-service", generation: 2 },
  status: {
    observedGeneration: 2,
    componentCount: 2,
    ready: "1/2",
    components: [
      { name: "auth", desiredReplicas: 3, readyReplicas: 1 },
      { name: "profile", desiredReplicas: 1, readyReplicas: 1 }
    ],
    conditions: [
      {
        type: "Ready" as const,
        status: "False" as const,
        reason: "ComponentsNotReady",
        message: "waiting for auth 1/3",
        lastTransitionTime: "t"
      },
      {
        type: "Progressing" as const,
        status: "True" as const,
        reason: "WaitingForReplicas",
        message: "children applied",
        lastTransitionTime: "t"
      },
      {
        type: "Degraded" as const,
        status: "False" as const,
        reason: "AsExpected",
        message: "ok",
        lastTransitionTime: "t"
      }
    ]
  }
}

describe("iii status", () => {
  it("summarises compositions one row each", () => {
    expect(summaryTable([composition, { metadata: { name: "new" } }]).split("\n")).toEqual([
      "NAME           READY   COMPONENTS   PROGRESSING   DEGRADED   REASON",
      "user-service   1/2     2            True          False      ComponentsNotReady",
      "new            -       -            Unknown       Unknown    NotReconciled"
    ])
  })

  it("details conditions and per-component replicas", () => {
    expect(detailTables(composition).split("\n")).toEqual([
      "CONDITION     STATUS   REASON               MESSAGE",
      "Ready         False    ComponentsNotReady   waiting for auth 1/3",
      "Progressing   True     WaitingForReplicas   children applied",
      "Degraded      False    AsExpected           ok",
      "",
      "COMPONENT   DESIRED   READY",
      "auth        3         1",
      "profile     1         1"
    ])
  })
})
