import { existsSync, readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { parseAllDocuments } from "yaml"
import { defaultRenderSettings } from "../src/Render.js"

const root = new URL("../../../manifests/", import.meta.url)
interface Container {
  readonly securityContext: {
    readonly allowPrivilegeEscalation?: boolean
    readonly capabilities: { readonly drop?: ReadonlyArray<string>; readonly add?: ReadonlyArray<string> }
  }
  readonly resources: { readonly limits?: object }
  readonly image: string
  readonly env?: ReadonlyArray<{ readonly name: string; readonly value?: string }>
}
interface Doc {
  readonly kind: string
  readonly metadata: { readonly name: string; readonly labels: Record<string, string> }
  readonly resources?: ReadonlyArray<string>
  readonly components?: ReadonlyArray<string>
  readonly configurations?: ReadonlyArray<string>
  readonly images?: ReadonlyArray<{ readonly name: string; readonly newTag: string }>
  readonly rules?: ReadonlyArray<Rule>
  readonly spec: {
    readonly template: {
      readonly spec: {
        readonly securityContext: object
        readonly hostPID?: boolean
        readonly containers: ReadonlyArray<Container>
      }
    }
  }
}
const docs = (file: string) =>
  parseAllDocuments(readFileSync(new URL(file, root), "utf8")).map((d) => d.toJS() as Doc)

interface Rule {
  readonly apiGroups: ReadonlyArray<string>
  readonly resources: ReadonlyArray<string>
  readonly verbs: ReadonlyArray<string>
}

describe("manifests", () => {
  it("lists only files that exist in the kustomizations", () => {
    const kustomizations = [
      "",
      "crd/",
      "namespace/",
      "controller/",
      "obs/",
      "images/",
      "node-agent/",
      "sidecar/"
    ]
    for (const dir of kustomizations) {
      const [kustomization] = docs(`${dir}kustomization.yaml`)
      const entries = [
        ...(kustomization?.resources ?? []),
        ...(kustomization?.components ?? []),
        ...(kustomization?.configurations ?? [])
      ]
      expect(entries.length).toBeGreaterThan(0)
      for (const r of entries) expect(existsSync(new URL(r, new URL(dir, root)))).toBe(true)
    }
  })

  it("gives the controller least privilege: no wildcards, no secrets, no pods, no exec", () => {
    const rules = docs("controller/rbac.yaml")
      .filter((d) => d.kind === "ClusterRole" || d.kind === "Role")
      .flatMap((d) => d.rules ?? [])
    expect(rules.length).toBeGreaterThan(0)
    for (const rule of rules) {
      for (const field of [rule.apiGroups, rule.resources, rule.verbs]) expect(field).not.toContain("*")
      expect(
        rule.resources.filter((r) => ["secrets", "pods", "pods/exec", "configmaps"].includes(r))
      ).toEqual([])
      expect(rule.verbs).not.toContain("escalate")
      expect(rule.verbs).not.toContain("bind")
    }
  })

  it("runs controller and obs under the restricted Pod Security Standard", () => {
    const workloads = [...docs("controller/deployment.yaml"), ...docs("obs/statefulset.yaml")].filter(
      (d) => d.kind === "Deployment" || d.kind === "StatefulSet"
    )
    expect(workloads.map((w) => w.metadata.name)).toEqual(["iii-controller", "iii-obs"])
    for (const w of workloads) {
      const pod = w.spec.template.spec
      expect(pod.securityContext).toMatchObject({
        runAsNonRoot: true,
        seccompProfile: { type: "RuntimeDefault" }
      })
      expect(pod.hostPID ?? false).toBe(false)
      for (const c of pod.containers) {
        expect(c.securityContext).toMatchObject({
          allowPrivilegeEscalation: false,
          capabilities: { drop: ["ALL"] }
        })
        expect(c.securityContext.capabilities.add ?? []).toEqual([])
        expect(c.resources.limits).toBeDefined()
      }
    }
    const [namespace] = docs("namespace/namespace.yaml")
    expect(namespace?.metadata.labels["pod-security.kubernetes.io/enforce"]).toBe("restricted")
  })

  it("names images in one place: every image, and the controller's sidecar image, is one images/ sets", () => {
    const [component] = docs("images/kustomization.yaml")
    const tags = new Map((component?.images ?? []).map((i) => [i.name, i.newTag]))
    expect([...tags.keys()]).toEqual(["ghcr.io/iii-io/iii", "ghcr.io/iii-io/iii-agent"])
    const containers = ["controller/deployment.yaml", "obs/statefulset.yaml", "node-agent/daemonset.yaml"]
      .flatMap(docs)
      .filter((d) => ["Deployment", "StatefulSet", "DaemonSet"].includes(d.kind))
      .flatMap((d) => d.spec.template.spec.containers)
    const agentImage = containers.flatMap((c) => c.env ?? []).find((e) => e.name === "III_AGENT_IMAGE")?.value
    // What the controller injects when nothing sets III_AGENT_IMAGE is what the manifests install.
    expect(agentImage).toBe(defaultRenderSettings.agentImage)
    for (const image of [...containers.map((c) => c.image), agentImage ?? ""]) {
      const [name, tag] = image.split(":")
      expect(tags.get(name ?? "")).toBe(tag)
    }
  })

  it("gives the node agent BPF and PERFMON only, read-only host mounts but its state, and RBAC on pods alone", () => {
    const all = docs("node-agent/daemonset.yaml") as unknown as ReadonlyArray<{
      kind: string
      rules?: ReadonlyArray<Rule>
      spec: {
        template: {
          spec: {
            hostPID?: boolean
            hostNetwork?: boolean
            containers: ReadonlyArray<{
              securityContext: {
                privileged?: boolean
                capabilities: { drop: Array<string>; add: Array<string> }
              }
              volumeMounts: ReadonlyArray<{ name: string; readOnly?: boolean }>
              env: ReadonlyArray<{ name: string }>
            }>
          }
        }
      }
    }>
    expect(all.filter((d) => d.kind === "ClusterRole").flatMap((d) => d.rules ?? [])).toEqual([
      { apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] }
    ])
    const daemonSet = all.find((d) => d.kind === "DaemonSet")
    const pod = daemonSet?.spec.template.spec
    expect([pod?.hostPID, pod?.hostNetwork]).toEqual([false, false])
    const agent = pod?.containers[0]
    expect(agent?.securityContext.privileged).toBe(false)
    expect(agent?.securityContext.capabilities).toEqual({ drop: ["ALL"], add: ["BPF", "PERFMON"] })
    expect(agent?.volumeMounts.filter((m) => m.readOnly !== true).map((m) => m.name)).toEqual(["state"])
    expect(agent?.env.map((e) => e.name)).toEqual(
      expect.arrayContaining(["NODE_NAME", "III_OBS_URL", "III_CGROUP_ROOT", "III_POD_LOGS", "III_STATE_DIR"])
    )
  })

  it("switches the controller to sidecars in the sidecar overlay (the patch names III_AGENT_MODE)", () => {
    const [deployment] = docs("controller/deployment.yaml") as unknown as ReadonlyArray<{
      spec: {
        template: {
          spec: { containers: ReadonlyArray<{ env: ReadonlyArray<{ name: string; value?: string }> }> }
        }
      }
    }>
    const env = deployment?.spec.template.spec.containers[0]?.env
    expect(env?.[1]).toEqual({ name: "III_AGENT_MODE", value: "node" })
    const [overlay] = docs("sidecar/kustomization.yaml") as unknown as ReadonlyArray<{
      patches: ReadonlyArray<{ patch: string }>
    }>
    expect(overlay?.patches[0]?.patch).toContain("/spec/template/spec/containers/0/env/1/value")
  })
})
