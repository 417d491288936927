import { fileURLToPath } from "node:url"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { afterEach, vi } from "vitest"
import { run } from "../src/Cli.js"

const repoPath = (path: string) => fileURLToPath(new URL(`../../../${path}`, import.meta.url))
const seed = repoPath("manifests/examples/user-service.yaml")
const broken = repoPath("packages/core/test/fixtures/invalid-four-errors.yaml")

const iii = (...args: Array<string>) => {
  const printed: Array<string> = []
  const spy = vi.spyOn(console, "log").mockImplementation((line: unknown) => void printed.push(String(line)))
  return run(["node", "iii", ...args]).pipe(
    Effect.provide(NodeContext.layer),
    Effect.exit,
    Effect.map((exit) => ({ exit, lines: printed.join("\n").split("\n") })),
    Effect.ensuring(Effect.sync(() => spy.mockRestore()))
  )
}

describe("iii validate", () => {
  afterEach(() => vi.restoreAllMocks())

  it.effect("prints ok for the seed example", () =>
    Effect.gen(function* () {
      const { exit, lines } = yield* iii("validate", seed)
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(lines).toEqual([`${seed}: ok`])
    })
  )

  it.effect("prints every error of an invalid file and fails, after reporting the valid ones", () =>
    Effect.gen(function* () {
      const { exit, lines } = yield* iii("validate", seed, broken)
      expect(Exit.isFailure(exit) && JSON.stringify(exit.cause)).toContain("ValidationFailed")
      expect(lines).toEqual([
        `${seed}: ok`,
        `${broken}: spec.components[0].replicas: min (5) is greater than max (3)`,
        expect.stringMatching(
          /^.*: spec\.components\[1\]\.image: "Profile Service:latest" is not a valid image/
        ),
        `${broken}: spec.components[1].scalingPolicy.threshold: "-200ms" must not be negative`,
        `${broken}: spec.components[2].name: duplicate component name "auth" (also spec.components[0])`
      ])
    })
  )

  it.effect("reports an unreadable file instead of crashing", () =>
    Effect.gen(function* () {
      const { exit, lines } = yield* iii("validate", "/nonexistent/composition.yaml")
      expect(Exit.isFailure(exit)).toBe(true)
      expect(lines[0]).toMatch(/^\/nonexistent\/composition\.yaml: cannot read: /)
    })
  )
})

describe("iii crd", () => {
  it.effect("prints the CustomResourceDefinition", () =>
    Effect.gen(function* () {
      const { exit, lines } = yield* iii("crd")
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(lines).toContain("kind: CustomResourceDefinition")
    })
  )
})
