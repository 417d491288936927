import { describe, expect, it } from "@effect/vitest"
import { Duration, Option } from "effect"
import * as Autoscaler from "../src/Autoscaler.js"

const bounds = { min: 2, max: 10 }

describe("Autoscaler", () => {
  it("reads Kubernetes quantities as obs writes them", () => {
    expect(["187", "250500m", "1.5k", "0", "x"].map(Autoscaler.parseQuantity)).toEqual([
      187,
      250.5,
      1500,
      0,
      undefined
    ])
  })

  it("recommends like the HPA: proportional for Values, total over per-replica target for AverageValues", () => {
    const p99 = { type: "Value", value: 200 } as const
    expect(Autoscaler.recommend(3, 400, p99, bounds)).toBe(6) // twice the target latency: twice the replicas
    expect(Autoscaler.recommend(3, 210, p99, bounds)).toBe(3) // within the 10 % tolerance
    expect(Autoscaler.recommend(4, 50, p99, bounds)).toBe(2) // clamped to min
    expect(Autoscaler.recommend(8, 10_000, p99, bounds)).toBe(10) // clamped to max
    const perReplica = { type: "AverageValue", value: 150 } as const
    expect(Autoscaler.recommend(2, 900, perReplica, bounds)).toBe(6)
  })

  it("scales up at once and down only after 5 minutes of lower recommendations", () => {
    const minute = 60_000
    let state = Autoscaler.stabilize([], 0, 6)
    expect(state.replicas).toBe(6)
    state = Autoscaler.stabilize(state.history, 1 * minute, 3)
    expect(state.replicas).toBe(6) // the 6 of a minute ago still counts
    state = Autoscaler.stabilize(state.history, 4 * minute, 3)
    expect(state.replicas).toBe(6)
    state = Autoscaler.stabilize(state.history, 5 * minute + 1, 3, Duration.minutes(5))
    expect(state.replicas).toBe(3)
    state = Autoscaler.stabilize(state.history, 5 * minute + 2, 9)
    expect(state.replicas).toBe(9)
  })

  it("maps policies to obs' metrics and leaves cpu to an HPA", () => {
    expect(
      Autoscaler.targetOf({ metric: "p95_latency", threshold: { kind: "duration", milliseconds: 150 } })
    ).toEqual(Option.some({ metricName: "iii_p95_latency_ms", target: { type: "Value", value: 150 } }))
    expect(
      Autoscaler.targetOf({ metric: "error_rate", threshold: { kind: "percentage", percent: 2 } })
    ).toEqual(Option.some({ metricName: "iii_error_rate", target: { type: "Value", value: 2 } }))
    expect(
      Autoscaler.targetOf({ metric: "request_rate", threshold: { kind: "rate", perSecond: 150 } })
    ).toEqual(Option.some({ metricName: "iii_request_rate", target: { type: "AverageValue", value: 150 } }))
    expect(Autoscaler.targetOf({ metric: "cpu", threshold: { kind: "percentage", percent: 80 } })).toEqual(
      Option.none()
    )
  })
})
