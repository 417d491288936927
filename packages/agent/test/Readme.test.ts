import { readFileSync } from "node:fs"
import { Effect, Layer } from "effect"
import { expect, it } from "vitest"
import * as Agent from "../src/Agent.js"
import * as Exporter from "../src/Exporter.js"

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")

it("runs the README's library example as written", async () => {
  const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1] ?? ""
  expect(block).toContain("Agent.layer(")
  // The example is plain JavaScript apart from its imports, which we provide.
  const body = block.replace(/^import .*$/gm, "")
  const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (
    ...args: Array<string>
  ) => (...values: Array<unknown>) => Promise<unknown>
  const example = new AsyncFunction("Agent", "Exporter", "Effect", "Layer", `${body}\nreturn described`)
  const described = await example(Agent, Exporter, Effect, Layer)
  expect(described).toMatch(/^proxy mode, clients connect to port \d+$/)
})
