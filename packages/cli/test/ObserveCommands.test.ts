/**
 * The terminal tools against a real obs node (with a token) receiving a shop's traffic: `iii tail`
 * and `iii top` on a real pseudo-terminal (colours, redraws, Ctrl-C typed), the same piped, and
 * `iii services`, `iii trace`, `iii correlate`; each failure as one line.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RunningNode, startNode, TestAgent, tempDir } from "../../obs/test/fixtures/Node.js"
import { checkout, ms, nowNano } from "../../obs/test/fixtures/Shop.js"
import { iiiOnTerminal, plain, runIii, spawnIii } from "./support/IiiProcess.js"

const token = "terminal-test-token"

const eventually = async (check: () => boolean, what: string, timeoutMs = 20_000) => {
  const until = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

describe("terminal tools", () => {
  const dir = tempDir()
  const tokenFile = join(dir.path, "token")
  let node: RunningNode
  let agent: TestAgent
  let traffic: NodeJS.Timeout
  let n = 0
  const first = checkout(1, nowNano() - ms(30_000), true)

  beforeAll(async () => {
    writeFileSync(tokenFile, `${token}\n`)
    node = await startNode({ token: Option.some(Redacted.make(token)) })
    agent = new TestAgent(node.url, { authorization: `Bearer ${token}` })
    await agent.hello("terminal-agent")
    let seq = 1
    agent.send({ type: "batch", seq, spans: first.spans, metrics: [], logs: first.logs })
    await agent.ack(seq)
    // A checkout every 150 ms, every fifth failing: a node receiving traffic while the tools run.
    traffic = setInterval(() => {
      n++
      const order = checkout(100 + n, nowNano(), n % 5 === 0)
      seq++
      agent.send({ type: "batch", seq, spans: order.spans, metrics: [], logs: order.logs })
    }, 150)
  })
  afterAll(async () => {
    clearInterval(traffic)
    agent?.close()
    await node?.stop()
    dir.remove()
  })

  const flags = () => ["--obs", node.url, "--token-file", tokenFile]

  it("iii tail on a terminal: one coloured line per request as it happens; Ctrl-C ends it", async () => {
    const term = iiiOnTerminal(["tail", ...flags(), "--service", "payments"])
    try {
      await eventually(
        () =>
          plain(term.output())
            .split("\n")
            .filter((l) => l.includes("payments")).length >= 5,
        "5 lines"
      )
      const lines = plain(term.output())
        .split("\n")
        .filter((l) => l.trim() !== "")
      for (const line of lines.slice(0, 5))
        expect(line).toMatch(
          /^\d\d:\d\d:\d\d\.\d{3} {2}payments +POST \/charges +(201|502) +[\d.]+ ms {2}[0-9a-f]{32}$/
        )
      // Coloured by status: green for 201, and the failing fifth in red.
      expect(term.output()).toContain("\u001b[32m201")
      await eventually(() => term.output().includes("\u001b[31m502"), "a red 502")
      term.type("\u0003")
      expect(await term.exited).toBe(0)
    } finally {
      term.kill()
    }
  })

  it("iii tail piped: the same lines without colour, or JSON spans with -o json", async () => {
    const child = spawnIii(["tail", ...flags(), "--service", "catalog", "-o", "json"])
    let out = ""
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString()
    })
    try {
      await eventually(() => out.split("\n").length > 3, "3 JSON lines")
      const span = JSON.parse(out.split("\n")[0] ?? "")
      expect(span).toMatchObject({ service: "catalog", kind: "server", name: "GET /products/{id}" })
      expect(out).not.toContain("\u001b[")
    } finally {
      child.kill("SIGINT")
    }
  })

  it("iii top on a terminal: takes the screen, redraws services by rate, gives the screen back on Ctrl-C", async () => {
    const term = iiiOnTerminal(["top", ...flags(), "--interval", "1"])
    try {
      const redraws = () => term.output().split("\u001b[H\u001b[2J").length - 1
      await eventually(() => redraws() >= 2, "two frames")
      expect(term.output()).toContain("\u001b[?1049h")
      const frame = plain(term.output().split("\u001b[H\u001b[2J").at(-1) ?? "")
      expect(frame).toMatch(/iii top {2}http:\/\/127\.0\.0\.1:\d+ {2}services over the last 1m/)
      const rows = frame.split("\n").filter((l) => /^(frontend|catalog|payments) /.test(l))
      expect(rows.map((r) => r.split(/\s+/)[0]).sort()).toEqual(["catalog", "frontend", "payments"])
      for (const r of rows) expect(r).toMatch(/\s\d+(\.\d+)?\/s\s+\d+(\.\d)?%\s+[\d.]+ ms\s+[\d.]+ ms$/)
      term.type("\u0003")
      expect(await term.exited).toBe(0)
      // The screen given back after the last frame.
      expect(term.output().lastIndexOf("\u001b[?1049l")).toBeGreaterThan(
        term.output().lastIndexOf("\u001b[H\u001b[2J")
      )
    } finally {
      term.kill()
    }
  })

  it("iii top --service: that service's routes; piped, one table per refresh", async () => {
    const child = spawnIii(["top", ...flags(), "--service", "frontend", "--interval", "1"])
    let out = ""
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString()
    })
    try {
      await eventually(() => out.split("routes of frontend").length > 2, "two tables")
      expect(out).not.toContain("\u001b[")
      const table = out.split("\n\n")[0] ?? ""
      expect(table).toContain("ROUTE")
      expect(table).toMatch(/\n\/checkout +\d/)
    } finally {
      child.kill("SIGINT")
    }
  })

  it("iii services, iii trace and iii correlate print what the node knows", async () => {
    const services = await runIii(["services", ...flags()])
    expect(services.code).toBe(0)
    expect(services.stdout.split("\n")[0]).toMatch(/^SERVICE +RATE +ERRORS +P50 +P99$/)
    expect(services.stdout).toMatch(/\npayments +[\d.]+\/s +\d/)

    const trace = await runIii(["trace", first.traceId, ...flags()])
    expect(trace.code).toBe(0)
    const lines = trace.stdout.split("\n")
    expect(lines[0]).toMatch(
      new RegExp(`^trace ${first.traceId}  5 spans, 3 services \\(frontend, catalog, payments\\), 90\\.0 ms`)
    )
    expect(lines.slice(1, 6).map((l) => l.trim().split(/\s+/).slice(0, 2).join(" "))).toEqual([
      "frontend server",
      "frontend client",
      "catalog server",
      "frontend client",
      "payments server"
    ])
    expect(lines[5]).toMatch(/502 +58\.0 ms +█+ *$/)
    expect(trace.stdout).toContain("charge declined for order-1: card processor timed out")

    const correlated = await runIii(["correlate", first.correlationId, ...flags()])
    expect(correlated.code).toBe(0)
    expect(correlated.stdout).toContain(`trace ${first.traceId}`)
    expect(correlated.stdout).toContain("checkout order-1 failed: payment 502")
    expect(correlated.stdout).toMatch(/\npayments +\/charges +\d+ +\d+%/)
  })

  it("each failure is one line: unreachable node, no token, a wrong token, an unknown trace, a bad window", async () => {
    const closed = await startNode()
    const closedUrl = closed.url
    await closed.stop()
    const cases: ReadonlyArray<[ReadonlyArray<string>, RegExp]> = [
      [
        ["services", "--obs", closedUrl],
        /^iii: cannot reach obs at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\): is iii up running\? Or pass --obs URL$/
      ],
      [["tail", "--obs", closedUrl], /^iii: cannot reach obs at .* \(ECONNREFUSED\)/],
      [
        ["services", "--obs", node.url],
        /^iii: obs at http:\/\/127\.0\.0\.1:\d+ needs a token: pass --token-file FILE$/
      ],
      [["top", "--obs", node.url], /needs a token/],
      [
        ["tail", "--obs", node.url, "--token-file", join(dir.path, "missing")],
        /^iii: cannot read the token file .*missing: ENOENT/
      ],
      [["trace", "f".repeat(32), ...flags()], /^iii: trace f{32} not found$/],
      [["services", ...flags(), "--window", "5 minutes"], /^iii: --window: "5 minutes" is not a window/],
      [
        ["tail", ...flags(), "--status", "teapot"],
        /^iii: obs: invalid parameter "status": "teapot" is not one of/
      ]
    ]
    writeFileSync(join(dir.path, "wrong"), "not-the-token")
    const all: Array<[ReadonlyArray<string>, RegExp]> = [
      ...cases,
      [
        ["correlate", "x", "--obs", node.url, "--token-file", join(dir.path, "wrong")],
        /^iii: obs at .* refused the token \(check --token-file\)$/
      ]
    ]
    for (const [args, expected] of all) {
      const r = await runIii(args)
      expect(r.code, args.join(" ")).toBe(1)
      expect(r.stdout, args.join(" ")).toBe("")
      expect(r.stderr.trimEnd().split("\n"), args.join(" ")).toHaveLength(1)
      expect(r.stderr.trimEnd(), args.join(" ")).toMatch(expected)
    }
  }, 120_000)
})
