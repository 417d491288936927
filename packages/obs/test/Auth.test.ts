import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { Either, Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as ObsNodeConfig from "../src/ObsNodeConfig.js"
import { getJson, type RunningNode, startNode, TestAgent, tempDir, upgradeStatus } from "./fixtures/Node.js"
import { span, traceId } from "./fixtures/Spans.js"

describe("auth on", () => {
  const token = "s3cret-token"
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode({ token: Option.some(Redacted.make(token)) })
  })
  afterAll(() => node.stop())

  it("ingest needs the token in the Authorization header of the upgrade", async () => {
    const anonymous = new TestAgent(node.url)
    await expect(anonymous.opened()).rejects.toThrow("Unexpected server response: 401")
    const inHelloOnly = new TestAgent(node.url)
    await expect(inHelloOnly.opened()).rejects.toThrow("401")

    const inHeader = new TestAgent(node.url, { authorization: `Bearer ${token}` })
    expect(await inHeader.hello("a-4")).toMatchObject({ type: "welcome" })
    inHeader.send({ type: "batch", seq: 1, spans: [span({ trace: 4000 })], metrics: [], logs: [] })
    expect(await inHeader.ack(1)).toEqual({ type: "ack", seq: 1 })
    inHeader.close()
  })

  it("queries and tail need the bearer token; probes, metrics and the External Metrics API do not", async () => {
    const auth = { authorization: `Bearer ${token}` }
    expect((await getJson(`${node.url}/v1/traces`)).status).toBe(401)
    expect((await getJson(`${node.url}/v1/traces`, { authorization: "Bearer wrong" })).status).toBe(401)
    expect((await getJson(`${node.url}/v1/traces/${traceId(4000)}`, auth)).status).toBe(200)
    expect((await getJson(`${node.url}/v1/services`, auth)).status).toBe(200)
    const tail = `${node.url.replace("http", "ws")}/v1/tail`
    expect((await upgradeStatus(tail)).status).toBe(401)
    expect((await upgradeStatus(tail, { headers: auth })).status).toBe(101)
    expect((await getJson(`${node.url}/healthz`)).status).toBe(200)
    expect((await getJson(`${node.url}/metrics`)).status).toBe(200)
    expect((await getJson(`${node.url}/apis/external.metrics.k8s.io/v1beta1`)).status).toBe(200)
  })
})

describe("auth off", () => {
  it("everything is open", async () => {
    const node = await startNode()
    try {
      const agent = new TestAgent(node.url)
      expect(await agent.hello("open-agent")).toMatchObject({ type: "welcome" })
      agent.close()
      expect((await getJson(`${node.url}/v1/traces`)).status).toBe(200)
      expect((await upgradeStatus(`${node.url.replace("http", "ws")}/v1/tail`)).status).toBe(101)
    } finally {
      await node.stop()
    }
  })
})

describe("token files", () => {
  it("reads a token file and refuses an empty or missing one", () => {
    const dir = tempDir()
    try {
      const file = join(dir.path, "token")
      writeFileSync(file, "abc\n")
      const read = ObsNodeConfig.readToken(file)
      expect(Either.isRight(read) && Redacted.value(read.right)).toBe("abc")
      writeFileSync(file, "  \n")
      expect(Either.getLeft(ObsNodeConfig.readToken(file))).toEqual(
        Option.some(`token file ${file} is empty`)
      )
      expect(Either.isLeft(ObsNodeConfig.readToken(join(dir.path, "missing")))).toBe(true)
    } finally {
      dir.remove()
    }
  })
})
