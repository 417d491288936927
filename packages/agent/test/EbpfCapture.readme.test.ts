import { readFileSync } from "node:fs"
import { Effect, Fiber, Option, Stream } from "effect"
import { expect, it } from "vitest"
import * as EbpfCapture from "../src/EbpfCapture.js"

const readme = readFileSync(new URL("../../../bpf/README.md", import.meta.url), "utf8")
const availability = Effect.runSync(EbpfCapture.isAvailable)

it("runs bpf/README.md's EbpfCapture example as written", async () => {
  const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1] ?? ""
  expect(block).toContain("EbpfCapture.start(")
  // Plain JavaScript apart from its imports, which are provided here.
  const body = block.replace(/^import .*$/gm, "")
  const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (
    ...args: Array<string>
  ) => (...values: Array<unknown>) => Promise<unknown>
  const example = new AsyncFunction(
    "EbpfCapture",
    "Effect",
    "Fiber",
    "Option",
    "Stream",
    `${body}\nreturn described`
  )
  const described = await example(EbpfCapture, Effect, Fiber, Option, Stream)
  if (availability.available) expect(described).toBe("saw data on fd 1, dropped 0")
  else expect(described).toBe(`unavailable: ${availability.reasons.join("; ")}`)
})
