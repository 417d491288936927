import { readFileSync, writeFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { ServiceComposition } from "@iii/core"
import { Either } from "effect"
import { stringify } from "yaml"
import * as Render from "../src/Render.js"

const example = new URL("../../../manifests/examples/user-service.yaml", import.meta.url)
const golden = new URL("./fixtures/user-service.rendered.yaml", import.meta.url)

const decodeOne = (yaml: string) => {
  const [first] = ServiceComposition.fromYaml(yaml, "test")
  if (first === undefined || Either.isLeft(first)) throw new Error(`invalid: ${String(first?.left)}`)
  return first.right
}

const seed = () => decodeOne(readFileSync(example, "utf8"))

/** Multi-document YAML, the shape `iii render` prints. */
const toYaml = (objects: ReadonlyArray<unknown>) => objects.map((o) => stringify(o)).join("---\n")

describe("Render", () => {
  it("renders the seed example to the golden file (UPDATE_GOLDEN=1 rewrites it)", () => {
    const rendered = toYaml(Render.render({ ...seed(), metadata: { ...seed().metadata, namespace: "shop" } }))
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(golden, rendered)
    expect(rendered).toBe(readFileSync(golden, "utf8"))
  })

  it("points children at their composition with a controller ownerReference", () => {
    const c = seed()
    const objects = Render.render({ ...c, metadata: { ...c.metadata, namespace: "shop", uid: "u-1" } })
    for (const o of objects) {
      expect(o.metadata?.ownerReferences).toEqual([
        {
          apiVersion: "iii.io/v1",
          kind: "ServiceComposition",
          name: "user-service",
          uid: "u-1",
          controller: true,
          blockOwnerDeletion: true
        }
      ])
    }
  })

  it("renders percentiles and error rates as Values, request rates per replica, cpu as a Resource", () => {
    const c = decodeOne(`
apiVersion: iii.io/v1
kind: ServiceComposition
metadata: { name: shop }
spec:
  components:
    - { name: a, image: a:1, replicas: { min: 1, max: 5 }, scalingPolicy: { metric: error_rate, threshold: 2.5% } }
    - { name: b, image: b:1, replicas: { min: 1, max: 5 }, scalingPolicy: { metric: request_rate, threshold: 150rps } }
    - name: c
      image: c:1
      replicas: { min: 2, max: 5 }
      scalingPolicy: { metric: cpu, threshold: 80% }
      resources: { requests: { cpu: 250m } }
    - { name: d, image: d:1, replicas: { min: 1, max: 5 }, scalingPolicy: { metric: p95_latency, threshold: 1.5s } }
`)
    const metrics = c.spec.components.map((component) =>
      component.scalingPolicy === undefined
        ? undefined
        : Render.hpaMetric(c, component, component.scalingPolicy)
    )
    expect(metrics.map((m) => m?.external?.target ?? m?.resource?.target)).toEqual([
      { type: "Value", value: "2500m" },
      { type: "AverageValue", averageValue: "150" },
      { type: "Utilization", averageUtilization: 80 },
      { type: "Value", value: "1500" }
    ])
    expect(metrics.map((m) => m?.external?.metric.name)).toEqual([
      "iii_error_rate",
      "iii_request_rate",
      undefined,
      "iii_p95_latency_ms"
    ])
  })

  it("injects nothing with the node agent (the default) and renders no HPA with the controller's own scaling loop", () => {
    expect(Render.defaultRenderSettings.agentMode).toBe("node")
    const objects = Render.render(seed(), { ...Render.defaultRenderSettings, scaling: "controller" })
    expect(objects.map((o) => o.kind)).toEqual(["Deployment", "Service", "Deployment", "Service"])
    const spec = objects[0]?.spec as
      | { template?: { spec?: { containers?: unknown; initContainers?: unknown } } }
      | undefined
    expect(spec?.template?.spec?.containers).toBeDefined()
    expect(spec?.template?.spec?.initContainers).toBeUndefined()
  })

  it("annotates the pods of a composition with observability.propagation (the node agent's opt-in)", () => {
    const c = seed()
    const annotationsOf = (composition: typeof c) =>
      Render.render(composition).flatMap((o) =>
        o.kind === "Deployment"
          ? [
              (o.spec as { template?: { metadata?: { annotations?: Record<string, string> } } } | undefined)
                ?.template?.metadata?.annotations ?? {}
            ]
          : []
      )
    for (const annotations of annotationsOf(c)) expect(annotations["iii.io/propagation"]).toBeUndefined()
    const on = { ...c, spec: { ...c.spec, observability: { ...c.spec.observability, propagation: true } } }
    const annotated = annotationsOf(on)
    expect(annotated.length).toBeGreaterThan(0)
    for (const annotations of annotated) {
      expect(annotations["iii.io/propagation"]).toBe("true")
      expect(JSON.parse(annotations["iii.io/observability"] ?? "{}")).toMatchObject({ propagation: true })
    }
  })

  it("injects the agent as a native sidecar, in a shared pid namespace, in sidecar mode", () => {
    const objects = Render.render(seed(), { ...Render.defaultRenderSettings, agentMode: "sidecar" })
    const spec = objects[0]?.spec as {
      template: {
        metadata: { labels: Record<string, string> }
        spec: {
          shareProcessNamespace?: boolean
          initContainers?: Array<{ name: string; restartPolicy?: string; args: Array<string> }>
        }
      }
    }
    expect(spec.template.spec.shareProcessNamespace).toBe(true)
    expect(spec.template.spec.initContainers?.map((c) => [c.name, c.restartPolicy, c.args])).toEqual([
      ["iii-agent", "Always", ["agent", "--all-pod-processes"]]
    ])
    expect(spec.template.metadata.labels["iii.io/composition"]).toBe("user-service")
  })

  it("finds what the schema cannot: cpu scaling without a cpu request, child names over 63 characters", () => {
    const c = decodeOne(`
apiVersion: iii.io/v1
kind: ServiceComposition
metadata: { name: a-rather-long-composition-name-for-a-service }
spec:
  components:
    - { name: with-an-equally-long-component-name, image: a:1, replicas: { min: 1, max: 3 }, scalingPolicy: { metric: cpu, threshold: 80% } }
`)
    expect(Render.semanticIssues(c).map((i) => i.path)).toEqual([
      "spec.components[0].name",
      "spec.components[0].resources.requests.cpu"
    ])
  })
})
