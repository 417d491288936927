/**
 * manifests/node-agent against a real kube-apiserver (envtest): every object passes the API server's
 * strict validation, and the agent's service account can do what the node agent does (list and watch
 * the pods of a node) and nothing more.
 */
import { readFileSync } from "node:fs"
import { KubeClient } from "@iii/controller"
import { Context, Effect, Either, Exit, Layer, Scope } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { parseAllDocuments } from "yaml"
import * as Envtest from "../../../controller/test/support/Envtest.js"
import * as Kube from "../../src/internal/Kube.js"

const binaries = Envtest.findBinaries()
if (Either.isLeft(binaries)) console.warn(`node agent manifest test skipped: ${binaries.left}`)

const manifest = readFileSync(
  new URL("../../../../manifests/node-agent/daemonset.yaml", import.meta.url),
  "utf8"
)
const docs = parseAllDocuments(manifest).map(
  (d) => d.toJS() as { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }
)
const plurals: Record<string, string> = {
  Namespace: "namespaces",
  ServiceAccount: "serviceaccounts",
  ClusterRole: "clusterroles",
  ClusterRoleBinding: "clusterrolebindings",
  DaemonSet: "daemonsets"
}

describe.skipIf(Either.isLeft(binaries))("manifests/node-agent on a real API server", () => {
  const scope = Effect.runSync(Scope.make())
  afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)))

  it("is accepted under strict field validation, and its service account may list and watch pods only", async () => {
    const env = await Effect.runPromise(Scope.extend(Envtest.start(), scope))
    const client = (kubeconfigText: string) =>
      Effect.runPromise(
        Scope.extend(
          Effect.map(Layer.build(KubeClient.layer({ kubeconfigText })), (context) =>
            Context.get(context, KubeClient.KubeClient)
          ),
          scope
        )
      )
    const admin = await client(env.kubeconfig(env.admin))
    const request = <A>(options: KubeClient.RequestOptions) =>
      Effect.runPromise(Effect.either(admin.request<A>(options)))
    for (const doc of docs) {
      const plural = plurals[doc.kind]
      expect(plural, doc.kind).toBeDefined()
      const base = doc.apiVersion.includes("/") ? `/apis/${doc.apiVersion}` : `/api/${doc.apiVersion}`
      const ns = doc.metadata.namespace === undefined ? "" : `/namespaces/${doc.metadata.namespace}`
      const applied = await request({
        method: "PATCH",
        path: `${base}${ns}/${plural}/${doc.metadata.name}`,
        query: { fieldManager: "manifest-test", fieldValidation: "Strict" },
        contentType: "application/apply-patch+yaml",
        body: doc
      })
      expect(Either.isRight(applied) ? "accepted" : applied.left.message).toBe("accepted")
    }
    // A token of the agent's service account, as the kubelet would project it.
    const issued = await request<{ status: { token: string } }>({
      method: "POST",
      path: "/api/v1/namespaces/iii-node-agent/serviceaccounts/iii-agent/token",
      body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds: 600 } }
    })
    if (Either.isLeft(issued)) throw new Error(issued.left.message)
    const access: Kube.KubeAccess = {
      server: env.server,
      ca: env.ca,
      headers: () => ({ authorization: `Bearer ${issued.right.status.token}` }),
      source: "test"
    }
    const listed = await Effect.runPromise(
      Effect.scoped(
        Effect.async<ReadonlyArray<Kube.Pod>>((resume) => {
          Effect.runFork(
            Effect.scoped(
              Effect.zipRight(
                Kube.watchPods(access, "node-1", {
                  onList: (pods) => resume(Effect.succeed(pods)),
                  onPod: () => {}
                }),
                Effect.never
              )
            )
          )
        }).pipe(Effect.timeout("10 seconds"))
      )
    )
    expect(listed).toEqual([])
    const asAgent = await client(env.kubeconfig({ name: "iii-agent", token: issued.right.status.token }))
    for (const path of [
      "/api/v1/namespaces/iii-node-agent/secrets",
      "/api/v1/configmaps",
      "/apis/apps/v1/deployments"
    ]) {
      const denied = await Effect.runPromise(Effect.flip(asAgent.request({ method: "GET", path })))
      expect([path, denied.status]).toEqual([path, 403])
    }
    const deleteDenied = await Effect.runPromise(
      Effect.flip(asAgent.request({ method: "DELETE", path: "/api/v1/namespaces/default/pods/x" }))
    )
    expect(deleteDenied.status).toBe(403)
  }, 120_000)
})
