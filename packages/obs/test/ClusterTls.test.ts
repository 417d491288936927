/**
 * A cluster whose peers authenticate with TLS client certificates (`--tls-client-ca`) instead of a
 * token: real certificates from a CA the test makes with openssl, real `iii obs` processes on
 * 127.0.0.1 talking over their TLS listeners.
 */
import { readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { issue, makeCa, skipReason } from "./fixtures/Certificates.js"
import {
  buildCli,
  eventually,
  get,
  metric,
  startCluster,
  type TestCluster,
  tails
} from "./fixtures/Cluster.js"
import { TestAgent, tempDir } from "./fixtures/Node.js"
import { span, traceId } from "./fixtures/Spans.js"

if (skipReason !== undefined) console.warn(`skipping the cluster TLS tests: ${skipReason}`)

/** Peers' upgrades refused as unauthorized, in a node's /metrics. */
const refusedPeers = async (url: string) =>
  (await metric(url, 'iii_obs_connections_refused_total\\{endpoint="peer",reason="unauthorized"\\}')) ??
  Number.NaN

/** The status a `/v1/peer` upgrade is answered with (101 when a WebSocket opened). */
const upgradeStatus = (url: string, options: WebSocket.ClientOptions) =>
  new Promise<number>((resolve, reject) => {
    const ws = new WebSocket(`${url}/v1/peer`, options)
    ws.on("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0)
      ws.terminate()
    })
    ws.on("open", () => {
      resolve(101)
      ws.terminate()
    })
    ws.on("error", reject)
  })

describe.skipIf(skipReason !== undefined)(
  "obs cluster with peers authenticated by client certificates",
  () => {
    const dir = tempDir()
    let cluster: TestCluster
    let withToken: TestCluster
    let ca: Buffer
    let node: { certFile: string; keyFile: string }
    let foreign: { certFile: string; keyFile: string }
    beforeAll(async () => {
      buildCli()
      const clusterCa = makeCa(dir.path, "cluster")
      ca = readFileSync(clusterCa.certFile)
      // One certificate for every node, as one cert-manager Certificate in a StatefulSet's Secret.
      node = issue(dir.path, clusterCa, "obs-node", ["IP:127.0.0.1", "DNS:localhost"])
      foreign = issue(dir.path, makeCa(dir.path, "other"), "intruder", ["IP:127.0.0.1"])
      const tls = { certFile: node.certFile, keyFile: node.keyFile, clientCaFile: clusterCa.certFile }
      cluster = await startCluster(3, { tls, env: { III_OBS_HELLO_TIMEOUT: "2s" } })
      withToken = await startCluster(1, { tls, env: { III_OBS_TOKEN: "cluster-secret" } })
    }, 120_000)
    afterAll(async () => {
      await cluster?.stop()
      await withToken?.stop()
      dir.remove()
    })

    it("comes up over wss with no token and acknowledges writes at a quorum, readable through every node", async () => {
      for (const n of cluster.nodes) {
        const body = await eventually(
          `${n.address} sees 3 members up\n${tails(cluster.nodes)}`,
          30_000,
          async () => {
            const r = await get(`${n.url}/v1/cluster`)
            return r?.body.stable && r.body.members.every((m: { state: string }) => m.state === "up")
              ? r.body
              : undefined
          }
        )
        expect(body).toMatchObject({ node: n.address, replicas: 3, writeQuorum: 2 })
        expect(body.members.map((m: { address: string }) => m.address).sort()).toEqual(
          [...cluster.peers].sort()
        )
      }
      const now = BigInt(Date.now()) * 1_000_000n
      const spans = [
        span({ trace: 700, startTimeUnixNano: now }),
        span({ trace: 700, startTimeUnixNano: now + 1000n, service: "tls-peers" })
      ]
      const agent = new TestAgent(cluster.nodes[0]?.url ?? "")
      await agent.hello("tls-cluster-agent")
      agent.send({ type: "batch", seq: 1, spans, metrics: [], logs: [] })
      expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
      agent.close()
      for (const reader of cluster.nodes) {
        const trace = await get(`${reader.url}/v1/traces/${traceId(700)}`)
        expect(trace?.status, `${reader.address} reads the trace`).toBe(200)
        expect(trace?.body.spans.map((s: { spanId: string }) => s.spanId).sort()).toEqual(
          spans.map((s) => s.spanId).sort()
        )
        expect(trace?.body.partial).toBeUndefined()
      }
      // Each of the 3 owners stores both spans (the third may still be committing at the acknowledgement).
      for (const n of cluster.nodes)
        await eventually(
          `${n.address} stores the spans`,
          10_000,
          async () => (await metric(n.url, "iii_obs_store_spans")) === 2
        )
    })

    it("refuses, with 401 and no WebSocket, a peer with a certificate of another CA or with none", async () => {
      const [target] = cluster.nodes
      if (target === undefined) throw new Error("no nodes")
      const before = await refusedPeers(target.url)
      expect(before).toBeGreaterThanOrEqual(0)
      const wss = `wss://${target.address}`
      const cert = (c: { certFile: string; keyFile: string }) => ({
        cert: readFileSync(c.certFile),
        key: readFileSync(c.keyFile)
      })
      expect(await upgradeStatus(wss, { ca, ...cert(foreign) })).toBe(401)
      expect(await upgradeStatus(wss, { ca })).toBe(401)
      // The plain port cannot carry a certificate; with no token, no peer gets in there.
      expect(await upgradeStatus(target.url.replace("http", "ws"), {})).toBe(401)
      expect(await refusedPeers(target.url)).toBe(before + 3)
      // The cluster's own certificate is let in (the refusals above were about the certificate).
      expect(await upgradeStatus(wss, { ca, ...cert(node) })).toBe(101)
    })

    it("admits a peer with either the token or a certificate when both are configured", async () => {
      const [only] = withToken.nodes
      if (only === undefined) throw new Error("no node")
      const wss = `wss://${only.address}`
      const token = { authorization: "Bearer cluster-secret" }
      const { certFile, keyFile } = node
      const cert = { cert: readFileSync(certFile), key: readFileSync(keyFile) }
      expect(await upgradeStatus(wss, { ca, ...cert })).toBe(101)
      expect(await upgradeStatus(wss, { ca, headers: token })).toBe(101)
      expect(await upgradeStatus(only.url.replace("http", "ws"), { headers: token })).toBe(101)
      expect(await upgradeStatus(wss, { ca })).toBe(401)
      expect(await upgradeStatus(only.url.replace("http", "ws"), {})).toBe(401)
    })
  }
)
