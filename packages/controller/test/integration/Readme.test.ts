/**
 * The README's Layer example, run against a real API server. The first test keeps the README's copy
 * of the example identical to the code below (between the markers).
 */
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Controller, KubeClient } from "@iii/controller"
import { Duration, Effect, Layer, Option, Schedule } from "effect"
import * as Cluster from "../fixtures/Cluster.js"

const example = (kubeconfig: string) => {
  // README example start
  // The controller in-process, watching one namespace; KubeClient.layer resolves the kubeconfig
  // as kubectl does when given none.
  const KubeLive = KubeClient.layer({ kubeconfig })
  const ControllerLive = Controller.layer({ ...Controller.defaultSettings, namespace: "readme" }).pipe(
    Layer.provide(KubeLive)
  )

  const program = Effect.gen(function* () {
    const controller = yield* Controller.Controller
    yield* controller.synced // every informer has listed once
    yield* KubeClient.apply(
      KubeClient.resources.ServiceComposition,
      {
        apiVersion: "iii.io/v1",
        kind: "ServiceComposition",
        metadata: { name: "hello", namespace: "readme" },
        spec: { components: [{ name: "web", image: "nginx:1.27" }] }
      },
      { fieldManager: "my-app" }
    )
    // Wait for the controller to write the status.
    return yield* KubeClient.getOption(KubeClient.resources.ServiceComposition, "readme", "hello").pipe(
      Effect.flatMap((found) =>
        Option.flatMap(found, (o) => Option.fromNullable(o.status as { ready?: string }))
      ),
      Effect.retry(Schedule.spaced("100 millis"))
    )
  })

  return program.pipe(Effect.provide(Layer.merge(ControllerLive, KubeLive)))
  // README example end
}

/** The README's example without its import lines (this file imports the same names). */
const readmeBlock = () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8")
  const start = readme.indexOf("// The controller in-process")
  return readme.slice(start, readme.indexOf("```", start)).trim()
}

const exampleSource = () => {
  const self = readFileSync(new URL(import.meta.url), "utf8")
  const body = self.slice(
    self.indexOf("// README example start\n") + 24,
    self.indexOf("  // README example end")
  )
  return body
    .split("\n")
    .map((line) => line.replace(/^ {2}/, ""))
    .join("\n")
    .trim()
}

describe("README", () => {
  it("shows the example this file runs", () => {
    expect(readmeBlock()).toBe(exampleSource())
  })
})

describe.skipIf(Cluster.skipReason !== undefined)("README example against a real API server", () => {
  let cluster: Cluster.Cluster
  beforeAll(async () => {
    cluster = await Cluster.start()
    await Cluster.createNamespace(cluster, "readme")
  }, 120_000)
  afterAll(() => cluster?.close())

  it("runs the controller as a Layer in an Effect program", async () => {
    const kubeconfig = join(cluster.env.dir, "readme.kubeconfig")
    writeFileSync(kubeconfig, cluster.env.kubeconfig(cluster.env.admin)) // the app applies compositions too
    const status = await Effect.runPromise(
      example(kubeconfig).pipe(Effect.timeout(Duration.seconds(20)), Effect.scoped)
    )
    expect(status.ready).toBe("0/1")
  })
})
