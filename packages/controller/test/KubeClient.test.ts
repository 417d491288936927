import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { loadKubeConfig, make, pathOf, resources } from "../src/KubeClient.js"

const kubeconfig = (server: string, namespace?: string) =>
  JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "c", cluster: { server, "insecure-skip-tls-verify": true } }],
    users: [{ name: "u", user: { token: "t" } }],
    contexts: [{ name: "x", context: { cluster: "c", user: "u", ...(namespace ? { namespace } : {}) } }],
    "current-context": "x"
  })

describe("KubeClient", () => {
  const saved = {
    KUBECONFIG: process.env.KUBECONFIG,
    HOME: process.env.HOME,
    KUBERNETES_SERVICE_HOST: process.env.KUBERNETES_SERVICE_HOST
  }
  const dir = mkdtempSync(join(tmpdir(), "iii-kubeconfig-"))
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })

  it("builds REST paths for core, grouped, namespaced and cluster-scoped resources", () => {
    expect(pathOf(resources.Service, "shop", "a", "status")).toBe("/api/v1/namespaces/shop/services/a/status")
    expect(pathOf(resources.Deployment, "shop")).toBe("/apis/apps/v1/namespaces/shop/deployments")
    expect(pathOf(resources.ServiceComposition)).toBe("/apis/iii.io/v1/servicecompositions")
    expect(pathOf(resources.Namespace, "ignored", "shop")).toBe("/api/v1/namespaces/shop")
  })

  it("resolves the kubeconfig like kubectl: --kubeconfig, then KUBECONFIG, else a clear error", () => {
    const explicit = join(dir, "explicit")
    const fromEnv = join(dir, "env")
    writeFileSync(explicit, kubeconfig("https://explicit.example:6443", "team-a"))
    writeFileSync(fromEnv, kubeconfig("https://env.example:6443"))
    process.env.KUBECONFIG = fromEnv
    const a = make(Effect.runSync(loadKubeConfig({ kubeconfig: explicit })))
    expect([a.server, a.namespace]).toEqual(["https://explicit.example:6443", "team-a"])
    const b = make(Effect.runSync(loadKubeConfig()))
    expect([b.server, b.namespace]).toEqual(["https://env.example:6443", "default"])

    delete process.env.KUBECONFIG
    delete process.env.KUBERNETES_SERVICE_HOST
    process.env.HOME = dir // no ~/.kube/config there
    const none = Effect.runSync(Effect.flip(loadKubeConfig()))
    expect(none.message).toContain("no kubeconfig")
    rmSync(dir, { recursive: true, force: true })
  })
})
