import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { builtDirectory } from "../src/internal/node/Dashboard.js"
import { getJson, type RunningNode, startNode, tempDir } from "./fixtures/Node.js"

const token = "s3cret-dashboard-token"

describe("the dashboard's files, served by the node", () => {
  const site = tempDir()
  let node: RunningNode
  beforeAll(async () => {
    mkdirSync(join(site.path, "assets"))
    writeFileSync(join(site.path, "index.html"), "<!doctype html><title>iii</title>")
    writeFileSync(join(site.path, "assets", "app-1234.js"), "console.log(1)")
    node = await startNode({ dashboardDir: site.path, token: Option.some(Redacted.make(token)) })
  })
  afterAll(async () => {
    await node.stop()
    site.remove()
  })

  it("answers / and every client-side route with index.html, without a token", async () => {
    for (const path of [
      "/",
      "/services",
      "/traces/4bf92f3577b34da6a3ce929d0e0e4736",
      "/search?service=a&status=5xx"
    ]) {
      const res = await fetch(`${node.url}${path}`)
      expect(res.status, path).toBe(200)
      expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8")
      expect(res.headers.get("cache-control")).toBe("no-cache")
      expect(res.headers.get("content-security-policy")).toContain("default-src 'self'")
      expect(await res.text()).toContain("<title>iii</title>")
    }
  })

  it("serves built assets with their type, cached for good", async () => {
    const res = await fetch(`${node.url}/assets/app-1234.js`)
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toBe("text/javascript; charset=utf-8")
    expect(res.headers.get("cache-control")).toContain("immutable")
    expect(await res.text()).toBe("console.log(1)")
  })

  it("never serves a file outside its directory", async () => {
    for (const path of ["/../package.json", "/%2e%2e/%2e%2e/package.json", "/assets/..%2f..%2findex.html"]) {
      const res = await fetch(`${node.url}${path}`)
      expect(await res.text(), path).toContain("<title>iii</title>")
    }
  })

  it("leaves the API, probes and metrics as they were: the API still wants the token", async () => {
    expect((await getJson(`${node.url}/v1/services`)).status).toBe(401)
    expect((await getJson(`${node.url}/v1/services`, { authorization: `Bearer ${token}` })).status).toBe(200)
    expect((await getJson(`${node.url}/v1/nothing`, { authorization: `Bearer ${token}` })).status).toBe(404)
    expect((await fetch(`${node.url}/healthz`)).status).toBe(200)
  })

  const tail = (protocols: Array<string>) =>
    new Promise<{ opened: boolean; protocol: string; status?: number }>((resolve) => {
      const ws = new WebSocket(`${node.url.replace("http", "ws")}/v1/tail`, protocols)
      ws.on("open", () => {
        resolve({ opened: true, protocol: ws.protocol })
        ws.close()
      })
      ws.on("unexpected-response", (_req, res) => {
        resolve({ opened: false, protocol: "", status: res.statusCode ?? 0 })
        ws.terminate()
      })
      ws.on("error", () => undefined)
    })

  it("lets a browser's tail in with the token as a subprotocol, and answers with iii.tail alone", async () => {
    const encoded = Buffer.from(token).toString("base64url")
    expect(await tail(["iii.tail", `iii.bearer.${encoded}`])).toEqual({ opened: true, protocol: "iii.tail" })
    const wrong = Buffer.from("guess").toString("base64url")
    expect(await tail(["iii.tail", `iii.bearer.${wrong}`])).toMatchObject({ opened: false, status: 401 })
    expect(await tail(["iii.tail"])).toMatchObject({ opened: false, status: 401 })
  })
})

describe("a node whose dashboard is not built", () => {
  it("says so and how to build it, on every dashboard path", async () => {
    const empty = tempDir()
    const node = await startNode({ dashboardDir: join(empty.path, "missing") })
    try {
      const res = await fetch(`${node.url}/traces/abc`)
      expect(res.status).toBe(404)
      expect(await res.text()).toContain("The dashboard is not built")
    } finally {
      await node.stop()
      empty.remove()
    }
  })

  it("finds the package's own build directory by default", () => {
    expect(builtDirectory()).toMatch(/packages\/obs\/dist\/dashboard$/)
  })
})
