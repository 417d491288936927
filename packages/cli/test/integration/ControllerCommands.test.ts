/**
 * `iii apply`, `iii controller` and `iii status` against a real kube-apiserver (Envtest), run
 * in-process through the command line parser, as a user would type them.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { KubeClient } from "@iii/controller"
import { Effect, Either, Exit, Fiber, Layer, ManagedRuntime, Option, Schedule, Scope } from "effect"
import * as Envtest from "../../../controller/test/support/Envtest.js"
import { iii } from "../../src/Cli.js"

const binaries = Envtest.findBinaries()
if (Either.isLeft(binaries)) console.warn(`CLI cluster tests skipped: ${binaries.left}`)
const example = new URL("../../../../manifests/examples/user-service.yaml", import.meta.url).pathname
const crd = new URL("../../../../manifests/crd/servicecomposition.yaml", import.meta.url)

/** Runs `iii ...args`, returning what it printed and how it ended. */
const run = (args: ReadonlyArray<string>) => {
  const lines: Array<string> = []
  // Output the command prints goes to `lines`; logging keeps the real console.
  return Effect.consoleWith((real) =>
    Effect.flatMap(iii, (command) =>
      Command.run(command, { name: "iii", version: "test" })(["node", "iii", ...args])
    ).pipe(
      Effect.withConsole({
        ...real,
        log: (...a: ReadonlyArray<unknown>) => Effect.sync(() => void lines.push(a.join(" "))),
        error: (...a: ReadonlyArray<unknown>) => Effect.sync(() => void lines.push(a.join(" ")))
      })
    )
  ).pipe(
    Effect.provide(NodeContext.layer),
    Effect.exit,
    Effect.map((exit) => ({ exit, output: lines.join("\n") }))
  )
}

describe.skipIf(Either.isLeft(binaries))("iii apply / controller / status against a real API server", () => {
  const scope = Effect.runSync(Scope.make())
  const dir = mkdtempSync(join(tmpdir(), "iii-cli-"))
  const kubeconfig = join(dir, "kubeconfig")
  let admin: ManagedRuntime.ManagedRuntime<KubeClient.KubeClient, never>

  beforeAll(async () => {
    const env = await Effect.runPromise(Envtest.start().pipe(Scope.extend(scope)))
    writeFileSync(kubeconfig, env.kubeconfig(env.admin))
    admin = ManagedRuntime.make(Layer.orDie(KubeClient.layer({ kubeconfig })))
    await admin.runPromise(
      Effect.gen(function* () {
        yield* Envtest.applyYaml((yield* Effect.promise(() => import("node:fs"))).readFileSync(crd, "utf8"))
        const k = yield* KubeClient.KubeClient
        yield* k.request({
          method: "POST",
          path: "/api/v1/namespaces",
          body: { apiVersion: "v1", kind: "Namespace", metadata: { name: "cli" } }
        })
      })
    )
  }, 120_000)

  afterAll(async () => {
    await admin?.dispose()
    await Effect.runPromise(Scope.close(scope, Exit.void))
    rmSync(dir, { recursive: true, force: true })
  })

  it("refuses an invalid file without sending anything", async () => {
    const bad = join(dir, "bad.yaml")
    writeFileSync(
      bad,
      "apiVersion: iii.io/v1\nkind: ServiceComposition\nmetadata: { name: bad }\nspec:\n  components:\n    - { name: a, image: a:1, replicas: { min: 5, max: 3 } }\n"
    )
    const result = await Effect.runPromise(run(["apply", bad, "--kubeconfig", kubeconfig, "-n", "cli"]))
    expect(Exit.isFailure(result.exit)).toBe(true)
    expect(result.output).toContain("spec.components[0].replicas: min (5) is greater than max (3)")
    const found = await admin.runPromise(
      KubeClient.getOption(KubeClient.resources.ServiceComposition, "cli", "bad")
    )
    expect(Option.isNone(found)).toBe(true)
  })

  it("applies the seed example, reconciles it with `iii controller`, and shows it with `iii status`", async () => {
    const applied = await Effect.runPromise(run(["apply", example, "--kubeconfig", kubeconfig, "-n", "cli"]))
    expect(applied.output).toBe("servicecomposition.iii.io/user-service applied in cli")

    const controller = Effect.runFork(run(["controller", "--kubeconfig", kubeconfig, "-n", "cli"]))
    try {
      await admin.runPromise(
        KubeClient.getOption(KubeClient.resources.ServiceComposition, "cli", "user-service").pipe(
          Effect.flatMap((o) =>
            Option.isSome(o) && o.value.status !== undefined ? Effect.void : Effect.fail("no status yet")
          ),
          Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("30 seconds")))
        )
      )
      const all = await Effect.runPromise(run(["status", "--kubeconfig", kubeconfig, "-n", "cli"]))
      expect(all.output.split("\n")[1]).toMatch(
        /^user-service\s+0\/2\s+2\s+True\s+False\s+ComponentsNotReady$/
      )
      const one = await Effect.runPromise(
        run(["status", "user-service", "--kubeconfig", kubeconfig, "-n", "cli"])
      )
      expect(one.output).toContain("auth        3         0")
    } finally {
      await Effect.runPromise(Fiber.interrupt(controller))
    }
  }, 60_000)
})
