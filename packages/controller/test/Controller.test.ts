import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect } from "effect"
import * as Controller from "../src/Controller.js"

const settings = (env: Record<string, string>) =>
  Effect.runSync(
    Effect.withConfigProvider(
      Controller.settingsFromEnv("iii-system"),
      ConfigProvider.fromMap(new Map(Object.entries(env)))
    )
  )

describe("Controller settings", () => {
  it("defaults to all namespaces, HPAs, the node agent and leader election in its own namespace", () => {
    const s = settings({})
    expect(s.namespace).toBeUndefined()
    expect(s.render).toMatchObject({ scaling: "hpa", agentMode: "node" })
    expect(s.leaderElection).toMatchObject({ namespace: "iii-system", name: "iii-controller" })
    expect(s.leaderElection && Duration.toSeconds(s.leaderElection.leaseDuration)).toBe(15)
    expect(Duration.toMillis(s.backoff.initial)).toBe(5)
  })

  it("reads the documented variables; an empty namespace means all", () => {
    const s = settings({
      III_NAMESPACE: "",
      III_SCALING: "controller",
      III_AGENT_MODE: "sidecar",
      III_LEADER_ELECTION: "false",
      III_OBS_METRICS_URL: "http://obs:4320",
      III_CONCURRENCY: "4"
    })
    expect(s.namespace).toBeUndefined()
    expect(s.render).toMatchObject({ scaling: "controller", agentMode: "sidecar" })
    expect(s.leaderElection).toBeUndefined()
    expect(s.autoscaler.obsUrl).toBe("http://obs:4320")
    expect(s.concurrency).toBe(4)
    expect(settings({ III_NAMESPACE: "shop" }).namespace).toBe("shop")
  })

  it("rejects an unknown scaling mode", () => {
    expect(() => settings({ III_SCALING: "keda" })).toThrow(/III_SCALING/)
  })
})
