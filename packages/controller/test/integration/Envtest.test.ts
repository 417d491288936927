import { readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { KubeClient, layer } from "../../src/KubeClient.js"
import * as Envtest from "../support/Envtest.js"

const binaries = Envtest.findBinaries()
if (Either.isLeft(binaries)) console.warn(`Envtest tests skipped: ${binaries.left}`)

describe.skipIf(Either.isLeft(binaries))("Envtest", () => {
  it.scopedLive("runs a real kube-apiserver with an admin and a least-privileged token", () =>
    Effect.gen(function* () {
      const nobody: Envtest.User = { name: "nobody", token: "nobody-token" }
      const env = yield* Envtest.start({ users: [nobody] })
      const asAdmin = yield* Effect.provide(KubeClient, layer({ kubeconfigText: env.kubeconfig(env.admin) }))
      const version = yield* asAdmin.request<{ gitVersion: string }>({ method: "GET", path: "/version" })
      expect(version.gitVersion).toBe(`v${Envtest.kubernetesVersion}`)
      const asNobody = yield* Effect.provide(KubeClient, layer({ kubeconfigText: env.kubeconfig(nobody) }))
      const denied = yield* Effect.flip(
        asNobody.request({ method: "GET", path: "/api/v1/namespaces/default/secrets" })
      )
      expect(denied.status).toBe(403)
      expect(denied.reason).toBe("Forbidden")
    })
  )
})

describe.skipIf(Either.isLeft(binaries))("the generated CRD", () => {
  it.scopedLive("is accepted by a real API server", () =>
    Effect.gen(function* () {
      const env = yield* Envtest.start()
      const crd = readFileSync(
        new URL("../../../../manifests/crd/servicecomposition.yaml", import.meta.url),
        "utf8"
      )
      const applied = yield* Effect.either(
        Envtest.applyYaml(crd).pipe(Effect.provide(layer({ kubeconfigText: env.kubeconfig(env.admin) })))
      )
      expect(Either.isRight(applied) ? "accepted" : applied.left.message).toBe("accepted")
    })
  )
})
