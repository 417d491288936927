/**
 * iii as a library, the way a new user gets it: every workspace package packed (`npm pack` after the
 * TypeScript build), installed from the tarballs into a fresh app in a temporary directory together
 * with the Effect their peer ranges name, from the registry. There the package READMEs' embedding
 * examples are type-checked (TypeScript, NodeNext) and run through the packages' public exports only
 * (../fixtures/fresh-app/main.ts). The same app with the next Effect major must fail at `npm install`
 * with npm's own peer-dependency message.
 */
import { execFile } from "node:child_process"
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Cluster from "../../../controller/test/fixtures/Cluster.js"

const execFileAsync = promisify(execFile)
const root = fileURLToPath(new URL("../../../../", import.meta.url))
const readJson = (file: string) => JSON.parse(readFileSync(file, "utf8"))
const rootManifest = readJson(join(root, "package.json")) as { workspaces: ReadonlyArray<string> }
const manifests = rootManifest.workspaces.map((dir) => ({
  dir,
  ...readJson(join(root, dir, "package.json"))
}))

/** Runs a command to its end: what it printed, and its exit code (a failure is returned, not thrown). */
const sh = async (cwd: string, command: string, args: ReadonlyArray<string>, timeout = 240_000) => {
  try {
    const { stdout, stderr } = await execFileAsync(command, args, { cwd, timeout, maxBuffer: 64 << 20 })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string; message: string }
    return { code: failed.code ?? -1, stdout: failed.stdout ?? "", stderr: failed.stderr ?? failed.message }
  }
}

/** The supported Effect, as the packages' peer range says, and the next major, which must be refused. */
const effectRange: string = manifests[0].peerDependencies.effect
const unsupportedEffect = `effect@${Number(/\d+/.exec(effectRange)?.[0]) + 1}`

/** A README's ts example that contains `marker`: its import lines and the rest. */
const readmeExample = (dir: string, marker: string) => {
  const readme = readFileSync(join(root, dir, "README.md"), "utf8")
  const block = Array.from(readme.matchAll(/```ts\n([\s\S]*?)```/g), (m) => m[1] ?? "").find((b) =>
    b.includes(marker)
  )
  if (block === undefined) throw new Error(`${dir}/README.md has no ts example with ${marker}`)
  const lines = block.trimEnd().split("\n")
  const isImport = (line: string) => line.startsWith("import ")
  return { imports: lines.filter(isImport).join("\n"), body: lines.filter((l) => !isImport(l)).join("\n") }
}

/** Replaces a literal the example must contain (so a README change fails here, not silently). */
const substitute = (body: string, literal: string, expression: string) => {
  if (!body.includes(literal)) throw new Error(`the README example no longer contains ${literal}`)
  return body.replace(literal, expression)
}

/**
 * The README examples as modules of the app, each wrapped in a function of what it leaves to
 * the reader (directories, the span, addresses, the kubeconfig) and returning what it computes.
 */
const exampleModules = (): Record<string, string> => {
  const obs = readmeExample("packages/obs", "ObsNode.layer(")
  const agent = readmeExample("packages/agent", "Agent.layer(")
  const controller = readmeExample("packages/controller", "Controller.layer(")
  const effectApp = readmeExample("packages/core", "IiiTelemetry.layer(")
  let agentBody = substitute(agent.body, `"ws://127.0.0.1:7070"`, "obsUrl")
  agentBody = substitute(agentBody, "port: 3000 }", "port: upstreamPort }")
  return {
    "obs.ts": `${obs.imports}\nimport type { Telemetry } from "@iii/core"\n
export const obsExample = async (dataDir: string, storeDir: string, span: Telemetry.Span) => {
${obs.body}
return { health, spans }
}\n`,
    "agent.ts": `${agent.imports}\n
export const agentExample = async (obsUrl: string, upstreamPort: number) => {
${agentBody}
return { described, AgentLive }
}\n`,
    "controller.ts": `${controller.imports}\n
export const controllerExample = (kubeconfig: string) => {
${controller.body}
}\n`,
    // A module as it stands (it exports its Layer): type-checked with the optional peers installed.
    "effect-app.ts": `${effectApp.imports}\n${effectApp.body}\n`
  }
}

interface Packed {
  readonly name: string
  readonly filename: string
  readonly size: number
  readonly files: ReadonlyArray<{ readonly path: string }>
}

/** What the fresh app's main.ts printed last: one JSON line. */
const runPart = async (app: string, ...args: ReadonlyArray<string>) => {
  const result = await sh(app, process.execPath, ["main.ts", ...args], 90_000)
  expect(result.code, `node main.ts ${args.join(" ")}\n${result.stderr}\n${result.stdout}`).toBe(0)
  return JSON.parse(result.stdout.trimEnd().split("\n").at(-1) ?? "")
}

describe("package manifests", () => {
  it("move together: one version, and every @iii/* dependency pinned to it", () => {
    const versions = new Set(manifests.map((m) => m.version))
    expect(versions.size).toBe(1)
    for (const m of manifests)
      for (const [name, range] of Object.entries(m.dependencies ?? {}))
        if (name.startsWith("@iii/")) expect(range, `${m.name} → ${name}`).toBe(m.version)
  })

  it("take effect and @effect/* as peers only, within the workspace's dev versions", () => {
    const dev = readJson(join(root, "package.json")).devDependencies as Record<string, string>
    for (const m of manifests) {
      expect(m.private, m.name).toBeUndefined()
      expect(m.license, m.name).toBe("Apache-2.0")
      expect(m.peerDependencies.effect, m.name).toBe(effectRange)
      const isEffect = (name: string) => name === "effect" || name.startsWith("@effect/")
      expect(Object.keys(m.dependencies ?? {}).filter(isEffect), m.name).toEqual([])
      // A peer only one package uses may be that package's dev dependency: @effect/opentelemetry's own
      // peers (OpenTelemetry SDK 2) conflict with obs's test SDK 3, so npm nests it in packages/core.
      for (const [name, range] of Object.entries(m.peerDependencies))
        expect(dev[name] ?? m.devDependencies?.[name], name).toBe(range)
    }
  })
})

describe("the packed packages in a fresh Effect app", () => {
  const work = mkdtempSync(join(tmpdir(), "iii-fresh-"))
  const packs = join(work, "packs")
  const app = join(work, "app")
  let packed: ReadonlyArray<Packed> = []
  let install = { code: -1, stdout: "", stderr: "" }

  beforeAll(async () => {
    // The TypeScript build (a no-op when dist is current); the native addon is whatever
    // `npm run build:native` last made: rebuilding it here would race the agent's own tests.
    const build = await sh(root, process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-b"])
    expect(build.code, build.stdout).toBe(0)
    mkdirSync(packs)
    const pack = await sh(root, "npm", ["pack", "--workspaces", "--pack-destination", packs, "--json"])
    expect(pack.code, pack.stderr).toBe(0)
    packed = JSON.parse(pack.stdout)
    mkdirSync(join(app, "examples"), { recursive: true })
    writeFileSync(
      join(app, "package.json"),
      JSON.stringify({ name: "fresh-app", private: true, type: "module" })
    )
    install = await sh(app, "npm", [
      "install",
      "--no-audit",
      "--no-fund",
      "--prefer-offline",
      ...packed.map((p) => join(packs, p.filename)),
      `effect@${effectRange}`,
      // @iii/core/IiiTelemetry's optional peer (the CLI's peers bring @effect/platform).
      `@effect/opentelemetry@${manifests[0].peerDependencies["@effect/opentelemetry"]}`
    ])
    for (const [file, text] of Object.entries(exampleModules()))
      writeFileSync(join(app, "examples", file), text)
    cpSync(new URL("../fixtures/fresh-app/main.ts", import.meta.url), join(app, "main.ts"))
  }, 360_000)
  afterAll(() => rmSync(work, { recursive: true, force: true }))

  it("packs every package with its JavaScript, declarations, README and LICENSE, and no tests", () => {
    expect(packed.map((p) => p.name).sort()).toEqual(manifests.map((m) => m.name).sort())
    for (const p of packed) {
      const paths = p.files.map((f) => f.path)
      console.log(`${p.filename}: ${(p.size / 1024).toFixed(0)} KiB packed, ${paths.length} files`)
      expect(paths, p.name).toEqual(
        expect.arrayContaining(["package.json", "README.md", "LICENSE", "dist/index.js", "dist/index.d.ts"])
      )
      expect(
        paths.filter((path) => /(^|\/)(test|fixtures)\/|\.test\.|tsbuildinfo/.test(path)),
        p.name
      ).toEqual([])
    }
    const addon = "native/linux-x64/iii_native.node"
    if (existsSync(join(root, "packages/agent", addon)))
      expect(packed.find((p) => p.name === "@iii/agent")?.files.map((f) => f.path)).toContain(addon)
    else console.warn(`agent tarball checked without ${addon}: npm run build:native has not built it here`)
  })

  it("installs with the supported Effect, one copy shared by every package", () => {
    expect(install.code, install.stderr).toBe(0)
    const copies = readdirSync(join(app, "node_modules"), { recursive: true, encoding: "utf8" }).filter(
      (path) => path === "effect/package.json" || path.endsWith("/node_modules/effect/package.json")
    )
    expect(copies).toEqual(["effect/package.json"])
    expect(readJson(join(app, "node_modules/effect/package.json")).version).toMatch(/^3\./)
  })

  it("resolves each package's index and modules for ESM import, and not its internals", async () => {
    const script = `
      for (const name of ${JSON.stringify(manifests.map((m) => m.name))}) await import(name)
      await import("@iii/core/HashRing")
      await import("@iii/core/IiiTelemetry")
      await import("@iii/obs/internal/Server").catch((e) => console.log(e.code))`
    const result = await sh(app, process.execPath, ["--input-type=module", "-e", script], 60_000)
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout.trim()).toBe("ERR_PACKAGE_PATH_NOT_EXPORTED")
  }, 60_000)

  it("type-checks the README examples against the installed declarations (NodeNext)", async () => {
    // skipLibCheck off, so @iii/*'s own declarations are checked as the app sees them.
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2023",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          allowImportingTsExtensions: true,
          verbatimModuleSyntax: true,
          types: ["node"],
          typeRoots: [join(root, "node_modules/@types")]
        },
        include: ["main.ts", "examples"]
      })
    )
    const tsc = await sh(app, process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", "."])
    const errors = tsc.stdout.split("\n").filter((line) => /^\S+\(\d+,\d+\): error TS/.test(line))
    // Third-party declarations that fail on their own (isomorphic-ws wants @types/ws; lmdb's
    // `export =` in ESM) are not ours to fix: every other error is.
    const ours = errors.filter((line) => !/^node_modules\/(?!@iii\/)/.test(line))
    expect(ours, tsc.stdout).toEqual([])
    expect(tsc.code === 0 || errors.length > 0, tsc.stderr).toBe(true)
  }, 120_000)

  it("obs: a node Layer serves /healthz, and a span written to the store is read back", async () => {
    const result = await runPart(app, "obs")
    expect(result.health).toBe(200)
    expect(result.read).toEqual([result.written])
  }, 90_000)

  it("agent: a proxy-mode Layer exports a request it proxied to that node", async () => {
    const result = await runPart(app, "agent")
    expect(result.health).toBe(200)
    expect(result.described).toMatch(/^proxy mode, clients connect to port \d+$/)
    expect(result.proxied).toBe(200)
    expect(result.traces).toHaveLength(1)
    expect(result.traces[0]).toMatchObject({ rootService: "checkout", rootName: "GET /orders/{id}" })
    // The addon ships inside @iii/agent and loads from there (when this machine built it).
    if (existsSync(join(root, "packages/agent/native")))
      expect(result.addonPath).toBe(join(app, "node_modules/@iii/agent/native/linux-x64/iii_native.node"))
  }, 90_000)

  it("iii runs from the tarball: its README's validate line, and its version", async () => {
    const readme = readFileSync(join(root, "packages/cli/README.md"), "utf8")
    const line = /^iii (validate \S+)/m.exec(readme)
    expect(line, "packages/cli/README.md shows `iii validate FILE`").not.toBeNull()
    const [command = "", file = ""] = line?.[1]?.split(" ") ?? []
    cpSync(join(root, "manifests/examples/user-service.yaml"), join(app, file))
    const iii = join(app, "node_modules/.bin/iii")
    const validate = await sh(app, iii, [command, file], 60_000)
    expect(validate.code, validate.stderr).toBe(0)
    expect(validate.stdout.trim()).toBe(`${file}: ok`)
    expect((await sh(app, iii, ["--version"], 60_000)).stdout.trim()).toBe(manifests[0].version)
  }, 60_000)

  it.skipIf(Cluster.skipReason !== undefined)(
    "controller: the Layer reconciles a composition on the test kube-apiserver and writes its status",
    async () => {
      const cluster = await Cluster.start()
      try {
        await Cluster.createNamespace(cluster, "readme")
        const kubeconfig = join(work, "kubeconfig")
        writeFileSync(kubeconfig, cluster.env.kubeconfig(cluster.env.admin))
        const status = await runPart(app, "controller", kubeconfig)
        expect(status.ready).toBe("0/1")
      } finally {
        await cluster.close()
      }
    },
    180_000
  )

  it(`the same app with ${unsupportedEffect} fails at npm install with npm's peer-dependency message`, async () => {
    const refused = join(work, "refused")
    mkdirSync(refused)
    writeFileSync(
      join(refused, "package.json"),
      JSON.stringify({ name: "fresh-app", private: true, type: "module" })
    )
    const result = await sh(refused, "npm", [
      "install",
      "--no-audit",
      "--no-fund",
      "--prefer-offline",
      ...packed.map((p) => join(packs, p.filename)),
      unsupportedEffect
    ])
    expect(result.code).not.toBe(0)
    expect(result.stderr).toMatch(/ERESOLVE unable to resolve dependency tree/)
    expect(result.stderr).toMatch(/Found: effect@\d+\.\d+\.\d+/)
    expect(result.stderr).toMatch(/Could not resolve dependency:\nnpm error peer \S*effect\S*@"[^"]+" from /)
    expect(result.stderr).toMatch(/from @iii\/\w+@/)
    expect(existsSync(join(refused, "node_modules"))).toBe(false)
  }, 120_000)
})
