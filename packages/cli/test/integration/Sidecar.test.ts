/**
 * The contract between the controller's rendering and the agent: the sidecar container the controller
 * injects (its args and env, taken from `Render.render` of the seed example) runs as `iii agent` in a
 * real pid namespace shared with an app (`unshare --pid --fork --mount-proc`, as a pod with
 * `shareProcessNamespace: true`), traces the app with eBPF and delivers spans to a real obs node,
 * labelled with the composition and component. Needs root and eBPF; skipped with the reason otherwise.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { EbpfCapture } from "@iii/agent"
import { Render } from "@iii/controller"
import { ServiceComposition } from "@iii/core"
import { ObsNode } from "@iii/obs"
import { Context, Effect, Either, Exit, Layer, Schedule, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { parse } from "yaml"

const repo = (path: string) => fileURLToPath(new URL(`../../../../${path}`, import.meta.url))

const availability = Effect.runSync(EbpfCapture.isAvailable)
const skipReason = !availability.available
  ? availability.reasons.join("; ")
  : process.getuid?.() !== 0
    ? "creating pid namespaces needs root"
    : spawnSync("unshare", ["--version"]).status !== 0
      ? "unshare (util-linux) is not installed"
      : undefined
if (skipReason !== undefined) console.warn(`sidecar test skipped: ${skipReason}`)

interface Container {
  readonly name: string
  readonly args: ReadonlyArray<string>
  readonly env: ReadonlyArray<{ name: string; value?: string }>
}

/** The auth Deployment's injected agent container, as the controller renders the seed example. */
const renderedSidecar = (): Container => {
  const seed = Either.getOrThrow(
    ServiceComposition.validate(parse(readFileSync(repo("manifests/examples/user-service.yaml"), "utf8")))
  )
  const deployment = Render.render(
    { ...seed, metadata: { ...seed.metadata, namespace: "shop" } },
    { ...Render.defaultRenderSettings, agentMode: "sidecar" }
  ).find((o) => o.kind === "Deployment" && o.metadata?.name === "user-service-auth") as unknown as {
    spec: {
      template: { spec: { shareProcessNamespace?: boolean; initContainers: ReadonlyArray<Container> } }
    }
  }
  expect(deployment.spec.template.spec.shareProcessNamespace).toBe(true)
  const sidecar = deployment.spec.template.spec.initContainers.find((c) => c.name === "iii-agent")
  if (sidecar === undefined) throw new Error("no iii-agent container rendered")
  return sidecar
}

describe.skipIf(skipReason !== undefined)("the rendered agent sidecar", () => {
  const scope = Effect.runSync(Scope.make())
  const dataDir = mkdtempSync(join(tmpdir(), "iii-sidecar-"))
  let obsUrl = ""
  let pod: ChildProcess | undefined
  let agentOutput = ""

  beforeAll(async () => {
    const context = await Effect.runPromise(
      Layer.buildWithScope(ObsNode.layer(ObsNode.makeConfig(dataDir, { port: 0, host: "127.0.0.1" })), scope)
    )
    obsUrl = Context.get(context, ObsNode.ObsNode).url
  })

  afterAll(async () => {
    pod?.kill("SIGKILL")
    await Effect.runPromise(Scope.close(scope, Exit.void))
    rmSync(dataDir, { recursive: true, force: true })
  })

  it("traces the app it shares a pid namespace with and labels its spans with the composition", async () => {
    const sidecar = renderedSidecar()
    // The Downward API's values, as the kubelet would fill them in; obs is this test's node.
    const downward: Record<string, string> = {
      III_POD_NAME: "user-service-auth-5d8c",
      III_NAMESPACE: "shop",
      III_NODE_NAME: "node-1",
      III_POD_IP: "127.0.0.1",
      III_OBS_URL: obsUrl
    }
    const env = Object.fromEntries(sidecar.env.map((e) => [e.name, downward[e.name] ?? e.value ?? ""]))
    const port = 20_000 + Math.floor(Math.random() * 20_000)
    const app = `require("http").createServer((q, s) => s.end("ok")).listen(${port}, "127.0.0.1")`
    const agent = [
      "--experimental-transform-types",
      "--no-warnings",
      "--import",
      repo("scripts/ts-sources.mjs"),
      repo("packages/cli/src/bin.ts"),
      ...sidecar.args
    ]
    pod = spawn(
      "unshare",
      [
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "sh",
        "-c",
        // The shell is pid 1, like a pod's pause process; $0 is node: the app, then the agent, siblings.
        '"$0" -e "$1" & shift; "$0" "$@" & wait',
        process.execPath,
        app,
        ...agent
      ],
      { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] }
    )
    pod.stdout?.on("data", (chunk) => (agentOutput += chunk))
    pod.stderr?.on("data", (chunk) => (agentOutput += chunk))

    const request = Effect.tryPromise(() => fetch(`http://127.0.0.1:${port}/orders/42`).then((r) => r.text()))
    const traced = Effect.tryPromise(async () => {
      const res = await fetch(`${obsUrl}/v1/traces?service=auth&limit=5`)
      const body = (await res.json()) as { traces: ReadonlyArray<{ traceId: string }> }
      if (body.traces.length === 0) throw new Error("no trace yet")
      return body.traces[0]?.traceId ?? ""
    })
    // Requests until the agent has attached and a span arrived (it traces from when it starts).
    const traceId = await Effect.runPromise(
      Effect.zipRight(Effect.ignore(request), traced).pipe(
        Effect.retry(Schedule.spaced("300 millis").pipe(Schedule.upTo("30 seconds"))),
        Effect.tapError(() => Effect.sync(() => console.error(agentOutput)))
      )
    )
    const trace = (await (await fetch(`${obsUrl}/v1/traces/${traceId}`)).json()) as {
      spans: ReadonlyArray<Record<string, unknown>>
    }
    expect(agentOutput).toContain("ebpf mode")
    expect(trace.spans[0]).toMatchObject({
      service: "auth",
      composition: "user-service",
      component: "auth",
      namespace: "shop",
      pod: "user-service-auth-5d8c",
      kind: "server",
      name: "GET /orders/{id}",
      http: { statusCode: 200 }
    })
  }, 60_000)
})
