import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { NodeContext } from "@effect/platform-node"
import { Effect, Exit, Fiber, Logger } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { run } from "../src/Cli.js"

const dir = mkdtempSync(join(tmpdir(), "iii-cli-obs-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Runs `iii obs …` in-process, collecting log messages. */
const obs = (lines: Array<string>, ...args: Array<string>) =>
  run(["node", "iii", "obs", ...args]).pipe(
    Effect.provide(NodeContext.layer),
    Effect.provide(
      Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ message }) => lines.push(String(message)))
      )
    )
  )

describe("iii obs", () => {
  it("starts a node, logs where it listens, and stops when interrupted", async () => {
    const lines: Array<string> = []
    const token = join(dir, "token")
    writeFileSync(token, "cli-secret\n")
    const fiber = Effect.runFork(
      obs(
        lines,
        "--data",
        join(dir, "data"),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--token-file",
        token,
        "--retention",
        "3d"
      )
    )
    let listening: string | undefined
    while (listening === undefined) {
      listening = lines.find((l) => l.includes("listening on"))
      if (listening === undefined) await new Promise((r) => setTimeout(r, 20))
    }
    const port = /127\.0\.0\.1:(\d+)/.exec(listening)?.[1]
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200)
    expect((await fetch(`http://127.0.0.1:${port}/v1/services`)).status).toBe(401)
    const authorized = await fetch(`http://127.0.0.1:${port}/v1/services`, {
      headers: { authorization: "Bearer cli-secret" }
    })
    expect(authorized.status).toBe(200)
    expect(lines.some((l) => l.includes("without a token"))).toBe(false)
    const exit = await Effect.runPromise(Fiber.interrupt(fiber))
    expect(Exit.isInterrupted(exit)).toBe(true)
  })

  it("refuses a bad retention and an empty token file with the flag named", async () => {
    const bad = await Effect.runPromise(Effect.exit(obs([], "--data", join(dir, "d2"), "--retention", "7x")))
    expect(Exit.isFailure(bad) && JSON.stringify(bad.cause)).toContain("--retention")
    const empty = join(dir, "empty-token")
    writeFileSync(empty, "")
    const noToken = await Effect.runPromise(
      Effect.exit(obs([], "--data", join(dir, "d3"), "--token-file", empty))
    )
    expect(Exit.isFailure(noToken) && JSON.stringify(noToken.cause)).toContain("is empty")
  })
})
