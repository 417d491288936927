import { existsSync, readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { parseAllDocuments } from "yaml"

const root = new URL("../../../manifests/", import.meta.url)
interface Container {
  readonly securityContext: {
    readonly allowPrivilegeEscalation?: boolean
    readonly capabilities: { readonly drop?: ReadonlyArray<string>; readonly add?: ReadonlyArray<string> }
  }
  readonly resources: { readonly limits?: object }
}
interface Doc {
  readonly kind: string
  readonly metadata: { readonly name: string; readonly labels: Record<string, string> }
  readonly resources?: ReadonlyArray<string>
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
    for (const k of ["kustomization.yaml", "node-agent/kustomization.yaml"]) {
      const [kustomization] = docs(k)
      const dir = new URL(k.replace(/kustomization\.yaml$/, ""), root)
      for (const r of kustomization?.resources ?? []) expect(existsSync(new URL(r, dir))).toBe(true)
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
    const [namespace] = docs("namespace.yaml")
    expect(namespace?.metadata.labels["pod-security.kubernetes.io/enforce"]).toBe("restricted")
  })
})
