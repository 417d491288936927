import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Render } from "@iii/controller"
import { ConfigProvider, Effect, Either } from "effect"
import { vi } from "vitest"
import { parse, parseAllDocuments } from "yaml"
import { run } from "../src/Cli.js"
import { renderYaml } from "../src/RenderCommand.js"

const seedPath = fileURLToPath(new URL("../../../manifests/examples/user-service.yaml", import.meta.url))
const seed = readFileSync(seedPath, "utf8")

interface Pod {
  readonly initContainers?: ReadonlyArray<{
    readonly image: string
    readonly env: ReadonlyArray<{ name: string; value?: string }>
  }>
}
/** `iii render` of the seed example, as the command runs with `env` for its environment: the auth pod. */
const renderedAuthPod = (env: Record<string, string>, ...flags: Array<string>) => {
  const printed: Array<string> = []
  const spy = vi.spyOn(console, "log").mockImplementation((line: unknown) => void printed.push(String(line)))
  return run(["node", "iii", "render", ...flags, seedPath]).pipe(
    Effect.provide(NodeContext.layer),
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))),
    Effect.ensuring(Effect.sync(() => spy.mockRestore())),
    Effect.map(() => {
      const auth = printed
        .join("\n")
        .split(/^---$/m)
        .map(
          (text) =>
            parse(text) as { kind: string; metadata: { name: string }; spec: { template: { spec: Pod } } }
        )
        .find((o) => o.kind === "Deployment" && o.metadata.name === "user-service-auth")
      if (auth === undefined) throw new Error("no auth Deployment rendered")
      return auth.spec.template.spec
    })
  )
}

describe("iii render", () => {
  it("prints every object of the seed example as YAML documents, in the given namespace", () => {
    const out = renderYaml(seed, "user-service.yaml", Render.defaultRenderSettings, "shop")
    const docs = Either.getOrThrow(out)
      .split(/^---$/m)
      .flatMap((text) =>
        parseAllDocuments(text).map(
          (d) => d.toJS() as { kind: string; metadata: { name: string; namespace: string } }
        )
      )
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual([
      "Deployment/user-service-auth",
      "Service/user-service-auth",
      "HorizontalPodAutoscaler/user-service-auth",
      "Deployment/user-service-profile",
      "Service/user-service-profile"
    ])
    expect(new Set(docs.map((d) => d.metadata.namespace))).toEqual(new Set(["shop"]))
  })

  it("prints every problem instead, schema and semantic ones alike", () => {
    const bad = `
apiVersion: iii.io/v1
kind: ServiceComposition
metadata: { name: shop }
spec:
  components:
    - { name: a, image: a:1, replicas: { min: 5, max: 3 } }
    - { name: b, image: b:1, replicas: { min: 1, max: 3 }, scalingPolicy: { metric: cpu, threshold: 80% } }
`
    const out = renderYaml(bad, "bad.yaml", Render.defaultRenderSettings)
    expect(Either.isLeft(out) && out.left).toEqual([
      "bad.yaml: spec.components[0].replicas: min (5) is greater than max (3)"
    ])
    const semantic = renderYaml(
      bad.replace("min: 5, max: 3", "min: 1, max: 3"),
      "bad.yaml",
      Render.defaultRenderSettings
    )
    expect(Either.isLeft(semantic) && semantic.left).toEqual([
      "bad.yaml: shop: spec.components[1].resources.requests.cpu: scaling on cpu needs a cpu request (utilisation is measured against it)"
    ])
  })

  it.effect("follows the controller's settings: its variables, then the flags", () =>
    Effect.gen(function* () {
      const controllerEnv = {
        III_AGENT_MODE: "sidecar",
        III_AGENT_IMAGE: "registry.example/iii-agent:1.2.3",
        III_OBS_URL: "ws://obs.example:4320"
      }
      const sidecar = (yield* renderedAuthPod(controllerEnv)).initContainers?.[0]
      expect(sidecar?.image).toBe("registry.example/iii-agent:1.2.3")
      expect(sidecar?.env).toContainEqual({ name: "III_OBS_URL", value: "ws://obs.example:4320" })
      const flagged = yield* renderedAuthPod(controllerEnv, "--agent-image", "other.example/agent:9")
      expect(flagged.initContainers?.[0]?.image).toBe("other.example/agent:9")
      // The default is the node agent: nothing injected; sidecar mode injects the default image.
      expect((yield* renderedAuthPod({})).initContainers).toBeUndefined()
      expect((yield* renderedAuthPod({}, "--agent-mode", "sidecar")).initContainers?.[0]?.image).toBe(
        Render.defaultRenderSettings.agentImage
      )
    })
  )
})
