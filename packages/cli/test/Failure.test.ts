import { HelpDoc, ValidationError } from "@effect/cli"
import { ConfigError } from "effect"
import { describe, expect, it } from "vitest"
import { describe as describeFailure } from "../src/internal/Failure.js"
import { runIii } from "./support/IiiProcess.js"

describe("a failed iii command", () => {
  it("says what went wrong in one line, never a dump of the error object", () => {
    class Boom {
      readonly _tag = "Boom"
      readonly message = "the port is taken"
    }
    expect(describeFailure(new Boom())).toBe("the port is taken")
    expect(describeFailure({ _tag: "Bare", file: "/x" })).toBe('Bare {"file":"/x"}')
    expect(describeFailure(ConfigError.MissingData(["III_OBS_DATA"], "Expected III_OBS_DATA to exist"))).toBe(
      'configuration: (Missing data at III_OBS_DATA: "Expected III_OBS_DATA to exist")'
    )
    // The parser printed these itself, with the usage: nothing more to say.
    expect(describeFailure(ValidationError.invalidValue(HelpDoc.p("bad")))).toBeUndefined()
    expect(describeFailure({ _tag: "ValidationFailed" })).toBeUndefined()
  })

  const plain = (text: string) => {
    expect(text).not.toContain("_tag")
    expect(text).not.toMatch(/\bERROR\b/)
    expect(text).not.toContain("    at ")
  }

  it("an unknown subcommand: one line naming the subcommands, exit 1", async () => {
    const r = await runIii(["bogus"])
    expect(r.code).toBe(1)
    const lines = (r.stdout + r.stderr).split("\n").filter((l) => l.trim() !== "")
    expect(lines).toEqual([
      expect.stringMatching(/^Invalid subcommand for iii - use one of 'validate', .*'up'/)
    ])
    plain(r.stdout + r.stderr)
  })

  it("a bad flag value: the parser's lines and nothing after them", async () => {
    const r = await runIii(["obs", "--data", "/tmp/never-created", "--port", "banana"])
    expect(r.code).toBe(1)
    expect((r.stdout + r.stderr).split("\n").filter((l) => l.trim() !== "")).toEqual([
      "'banana' is not a integer"
    ])
    plain(r.stdout + r.stderr)
  })

  it("a failure of the command itself: `iii: ` and its message", async () => {
    const r = await runIii(["demo", "--duration", "soon"])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^iii: --duration: "soon" is not a duration/)
    expect(r.stderr.trim().split("\n")).toHaveLength(1)
    plain(r.stdout + r.stderr)
  })
})
