/**
 * One layout, three views: bpf/iii_capture.h (compiled with gcc here), the Rust mirror in the
 * addon (native/src/layout.rs, via its `eventLayout()` export) and the TypeScript decoder's
 * constants (src/internal/EventLayout.ts) must agree on every size, offset and enum value.
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "vitest"
import * as Layout from "../src/internal/EventLayout.js"
import * as NativeAddon from "../src/internal/NativeAddon.js"

const bpfDir = fileURLToPath(new URL("../../../bpf", import.meta.url))
const headerText = readFileSync(join(bpfDir, "iii_capture.h"), "utf8")

const hasGcc = spawnSync("gcc", ["--version"]).status === 0
if (!hasGcc) console.warn("EventLayout C check skipped: gcc is not installed")
const addon = NativeAddon.load()
if (addon._tag === "Missing") console.warn(`EventLayout Rust check skipped: ${addon.reason}`)

/** "struct" → size and "struct.field" → offset, as the TypeScript constants say. */
const tsView = (): Record<string, number> => {
  const view: Record<string, number> = {}
  for (const [name, layout] of Object.entries(Layout.structs)) {
    view[name] = layout.size
    for (const [field, offset] of Object.entries(layout.fields)) view[`${name}.${field}`] = offset
  }
  return view
}

/** Enum and #define values, keyed by their C names, as the TypeScript constants say. */
const tsConstants = (): Record<string, number> => {
  const constants: Record<string, number> = {
    III_LAYOUT_VERSION: Layout.LAYOUT_VERSION,
    III_MAX_PAYLOAD: Layout.MAX_PAYLOAD,
    III_DEFAULT_PAYLOAD: Layout.DEFAULT_PAYLOAD,
    III_INGRESS: Layout.Direction.ingress,
    III_EGRESS: Layout.Direction.egress
  }
  for (const [kind, value] of Object.entries(Layout.Kind))
    constants[`III_EVENT_${kind.toUpperCase()}`] = value
  Layout.syscalls.forEach((name, value) => {
    if (name !== undefined) constants[`III_SYS_${name.toUpperCase()}`] = value
  })
  return constants
}

/** Field names per struct, read from the header's text (`header`, the nested common header, excluded). */
const headerFields = (): Record<string, Array<string>> => {
  const fields: Record<string, Array<string>> = {}
  for (const match of headerText.matchAll(/struct (iii_\w+) \{([^}]*)\};/g)) {
    const [, name = "", body = ""] = match
    const withoutComments = body.replace(/\/\*[\s\S]*?\*\//g, "")
    fields[name] = [...withoutComments.matchAll(/(\w+)(\[[^\]]*\])?;/g)]
      .map((field) => field[1] ?? "")
      .filter((field) => field !== "header")
  }
  return fields
}

describe("event layout", () => {
  const work = mkdtempSync(join(tmpdir(), "iii-layout-"))
  afterAll(() => rmSync(work, { recursive: true, force: true }))

  it("lists every field of every struct in the header (the TypeScript view misses none)", () => {
    const fromHeader = headerFields()
    expect(Object.keys(fromHeader).sort()).toEqual(Object.keys(Layout.structs).sort())
    for (const [name, layout] of Object.entries(Layout.structs)) {
      expect({ name, fields: Object.keys(layout.fields).sort() }).toEqual({
        name,
        fields: [...(fromHeader[name] ?? [])].sort()
      })
    }
  })

  it.skipIf(!hasGcc)("C (gcc) and TypeScript agree on sizes, offsets and enum values", () => {
    const lines: Array<string> = []
    for (const [name, layout] of Object.entries(Layout.structs)) {
      lines.push(`printf("${name} %zu\\n", sizeof(struct ${name}));`)
      for (const field of Object.keys(layout.fields)) {
        lines.push(`printf("${name}.${field} %zu\\n", offsetof(struct ${name}, ${field}));`)
      }
    }
    for (const constant of Object.keys(tsConstants()))
      lines.push(`printf("${constant} %d\\n", (int)(${constant}));`)
    const source = join(work, "layout.c")
    const binary = join(work, "layout")
    writeFileSync(
      source,
      `#include <stddef.h>\n#include <stdio.h>\n#include "iii_capture.h"\nint main(void) {\n${lines.join("\n")}\nreturn 0;\n}\n`
    )
    const compiled = spawnSync("gcc", ["-Wall", "-Werror", "-I", bpfDir, source, "-o", binary], {
      encoding: "utf8"
    })
    expect(compiled.stderr).toBe("")
    expect(compiled.status).toBe(0)
    const run = spawnSync(binary, { encoding: "utf8" })
    const fromC = Object.fromEntries(
      run.stdout
        .trim()
        .split("\n")
        .map((line) => {
          const [key = "", value = ""] = line.split(" ")
          return [key, Number(value)]
        })
    )
    expect(fromC).toEqual({ ...tsView(), ...tsConstants() })
  })

  it.skipIf(addon._tag === "Missing")("Rust (the addon) and TypeScript agree on sizes and offsets", () => {
    if (addon._tag === "Missing") return
    const fromRust: Record<string, number> = {}
    for (const struct of addon.addon.eventLayout()) {
      fromRust[struct.name] = struct.size
      for (const field of struct.fields) fromRust[`${struct.name}.${field.name}`] = field.offset
    }
    expect(fromRust).toEqual(tsView())
    expect(addon.addon.layoutVersion()).toBe(Layout.LAYOUT_VERSION)
  })
})
