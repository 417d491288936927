/**
 * `iii up` as a user runs it, in a process of its own: the demo (eBPF when this machine allows it,
 * and proxy mode), a composition file with local commands, Ctrl-C, a second run on the same data,
 * and the failures a user meets first.
 */
import type { ChildProcess } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { connect, createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { runIii, spawnIii } from "./support/IiiProcess.js"

const homes: Array<string> = []
const newHome = () => {
  const dir = mkdtempSync(join(tmpdir(), "iii-up-test-"))
  homes.push(dir)
  return dir
}
afterAll(() => {
  for (const h of homes) rmSync(h, { recursive: true, force: true })
})

interface Running {
  readonly child: ChildProcess
  readonly url: string
  readonly token: string
  readonly output: () => string
  readonly stop: () => Promise<number | null>
}

/** Starts `iii up ARGS` and waits for the dashboard line. */
const up = async (args: ReadonlyArray<string>): Promise<Running> => {
  const child = spawnIii(["up", ...args])
  let output = ""
  child.stdout?.on("data", (d: Buffer) => {
    output += d.toString()
  })
  child.stderr?.on("data", (d: Buffer) => {
    output += d.toString()
  })
  const exited = new Promise<number | null>((resolve) => child.on("close", resolve))
  const until = Date.now() + 60_000
  let match: RegExpExecArray | null = null
  while (match === null) {
    match = /Dashboard: (http:\/\/127\.0\.0\.1:\d+)\/#token=(\S+)/.exec(output)
    if (match === null && (Date.now() > until || child.exitCode !== null)) {
      child.kill("SIGKILL")
      throw new Error(`iii up did not start:\n${output}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    child,
    url: match[1] ?? "",
    token: match[2] ?? "",
    output: () => output,
    stop: async () => {
      child.kill("SIGINT")
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
      const code = await exited
      clearTimeout(timer)
      return code
    }
  }
}

const get = async (r: Running, path: string) => {
  const res = await fetch(`${r.url}${path}`, { headers: { authorization: `Bearer ${r.token}` } })
  // biome-ignore lint/suspicious/noExplicitAny: tests poke into JSON answers
  return { status: res.status, body: (await res.json()) as any }
}

const eventually = async <A>(
  probe: () => Promise<A | undefined>,
  what: string,
  timeoutMs = 45_000
): Promise<A> => {
  const until = Date.now() + timeoutMs
  for (;;) {
    const value = await probe().catch(() => undefined)
    if (value !== undefined) return value
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(port, "127.0.0.1")
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

/** A checkout trace of the demo with at least 3 spans across 2 services, once there is one. */
const demoTrace = (r: Running) =>
  eventually(async () => {
    const page = await get(r, "/v1/traces?service=frontend&route=/checkout&limit=20")
    return (page.body.traces as Array<{ traceId: string; spanCount: number; services: Array<string> }>).find(
      (t) => t.spanCount >= 3 && t.services.length >= 2
    )
  }, "a checkout trace across services")

const canTraceWithEbpf = process.getuid?.() === 0

describe("iii up", () => {
  it.each([
    ["auto", canTraceWithEbpf ? "ebpf" : "proxy"],
    ["proxy", "proxy"]
  ] as const)(
    "--mode %s runs the demo (%s mode): three services with traffic, traces across them, logs; Ctrl-C stops it all and a second run has the data",
    async (mode, expected) => {
      const home = newHome()
      const first = await up(["--data", home, "--port", "0", "--mode", mode])
      const summary = first.output()
      expect(summary).toContain(`agent     ${expected} mode:`)
      for (const service of ["frontend", "catalog", "payments"])
        expect(summary).toMatch(
          new RegExp(`\\n  ${service} +127\\.0\\.0\\.1:\\d+  output in ${home}/logs/${service}\\.log`)
        )
      const ports = Array.from(summary.matchAll(/127\.0\.0\.1:(\d+) {2}output in/g), (m) => Number(m[1]))

      const services = await eventually(async () => {
        const s = await get(first, "/v1/services")
        return s.body.services.length === 3 ? s.body.services : undefined
      }, "three services")
      expect(
        services.map((s: { service: string; composition: string }) => `${s.composition}/${s.service}`)
      ).toEqual(["shop/catalog", "shop/frontend", "shop/payments"])
      const trace = await demoTrace(first)
      // The checkout's logs reached obs, tied to its correlation id, and the apps' output is in files.
      const summaryOfTrace = await get(first, `/v1/traces/${trace.traceId}`)
      const correlationId = summaryOfTrace.body.spans[0].correlationId as string
      await eventually(async () => {
        const c = await get(first, `/v1/correlate/${encodeURIComponent(correlationId)}`)
        return c.body.logs?.length > 0 ? c.body.logs : undefined
      }, "the checkout's logs")
      expect(readFileSync(join(home, "logs", "frontend.log"), "utf8")).toContain('"msg":"frontend listening')
      expect(JSON.parse(readFileSync(join(home, "node.json"), "utf8"))).toMatchObject({ url: first.url })
      // Quiet after the summary: the apps and agents write to files, not to the terminal.
      await new Promise((r) => setTimeout(r, 2_000))
      expect(first.output()).toBe(summary)

      expect(await first.stop()).toBe(0)
      expect(first.output().slice(summary.length)).toBe("iii up: stopped\n")
      expect(existsSync(join(home, "node.json"))).toBe(false)
      for (const port of ports) expect(await listening(port), `port ${port} after Ctrl-C`).toBe(false)

      const second = await up(["--data", home, "--port", "0", "--mode", mode])
      try {
        expect((await get(second, `/v1/traces/${trace.traceId}`)).status).toBe(200)
      } finally {
        expect(await second.stop()).toBe(0)
      }
    },
    180_000
  )

  it("runs the components of a composition file that declare a local command, and says which it skips", async () => {
    const home = newHome()
    const dir = newHome()
    // `web` calls `api` through the address iii up gives it, as a pod would through the kubelet's variables.
    writeFileSync(
      join(dir, "app.mjs"),
      `import http from "node:http"
const role = process.argv[2]
http.createServer((req, res) => {
  if (role === "api") return res.end(JSON.stringify({ stock: 3 }))
  const to = { host: process.env.MYAPP_API_SERVICE_HOST, port: Number(process.env.MYAPP_API_SERVICE_PORT), path: "/stock" }
  http.get(to, (answer) => { answer.resume(); answer.on("end", () => res.end("ok " + answer.statusCode)) })
}).listen(Number(process.env.PORT), "127.0.0.1")
`
    )
    writeFileSync(
      join(dir, "myapp.yaml"),
      `apiVersion: iii.io/v1
kind: ServiceComposition
metadata: { name: myapp }
spec:
  components:
    - { name: web, image: web:v1, command: [node, app.mjs, web], env: [{ name: GREETING, value: hi }] }
    - { name: api, image: api:v1, command: [node, app.mjs, api] }
    - { name: db, image: postgres:17 }
`
    )
    const r = await up([join(dir, "myapp.yaml"), "--data", home, "--port", "0", "--mode", "proxy"])
    try {
      expect(r.output()).toContain("iii up: composition myapp, 2 services")
      expect(r.output()).toMatch(/\n {2}db +skipped: no local command \(it runs in a cluster only\)/)
      const webPort = /\n {2}web +127\.0\.0\.1:(\d+)/.exec(r.output())?.[1]
      const answer = await eventually(async () => {
        const res = await fetch(`http://127.0.0.1:${webPort}/`)
        return res.ok ? await res.text() : undefined
      }, "web to answer")
      expect(answer).toBe("ok 200")
      const traces = await eventually(async () => {
        const page = await get(r, "/v1/traces?service=web")
        return page.body.traces.length > 0 ? page.body.traces : undefined
      }, "a trace of web")
      // Each process's proxy exports on its own, so the api's span may arrive in a later batch than web's.
      const spans = await eventually(async () => {
        const trace = await get(r, `/v1/traces/${traces[0].traceId}`)
        return trace.body.spans.length >= 3 ? trace.body.spans : undefined
      }, "the trace's three spans")
      expect(spans.map((s: { service: string; kind: string }) => `${s.service} ${s.kind}`).sort()).toEqual([
        "api server",
        "web client",
        "web server"
      ])
    } finally {
      expect(await r.stop()).toBe(0)
    }
  }, 120_000)

  it("fails with one clear line: port taken, invalid file, nothing to run", async () => {
    const taken = createServer()
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve))
    const port = (taken.address() as { port: number }).port
    const home = newHome()
    try {
      const busy = await runIii(["up", "--data", home, "--port", String(port), "--mode", "proxy"], {
        timeoutMs: 60_000
      })
      expect(busy.code).toBe(1)
      expect(busy.stderr.trim()).toMatch(
        new RegExp(`^iii: cannot listen on 127\\.0\\.0\\.1:${port}: listen EADDRINUSE`)
      )
    } finally {
      taken.close()
    }
    const dir = newHome()
    writeFileSync(
      join(dir, "bad.yaml"),
      "apiVersion: iii.io/v1\nkind: ServiceComposition\nmetadata: { name: Bad }\nspec: { components: [] }\n"
    )
    const invalid = await runIii(["up", join(dir, "bad.yaml"), "--data", home])
    expect(invalid.code).toBe(1)
    expect(invalid.stderr).toMatch(
      /^iii: .*bad\.yaml is not a valid composition:\n {2}metadata\.name: .*\n {2}spec\.components: a composition needs at least one component\n$/
    )
    writeFileSync(
      join(dir, "none.yaml"),
      "apiVersion: iii.io/v1\nkind: ServiceComposition\nmetadata: { name: x }\nspec: { components: [{ name: a, image: a:v1 }] }\n"
    )
    const nothing = await runIii(["up", join(dir, "none.yaml"), "--data", home])
    expect(nothing.code).toBe(1)
    expect(nothing.stderr).toBe(
      "iii: no component of x declares a local `command`, so there is nothing to run here (see iii up --help)\n"
    )
  }, 120_000)
})
