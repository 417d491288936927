import { execFileSync, spawnSync } from "node:child_process"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { get } from "node:https"
import { join } from "node:path"
import { ConfigProvider, Effect, Either, Exit, Layer, Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import * as Errors from "../src/Errors.js"
import * as ObsNode from "../src/ObsNode.js"
import * as ObsNodeConfig from "../src/ObsNodeConfig.js"
import { type RunningNode, startNode, TestAgent, tempDir } from "./fixtures/Node.js"
import { span, traceId } from "./fixtures/Spans.js"

const canRun = spawnSync("openssl", ["version"]).status === 0
if (!canRun) console.warn("skipping TLS tests: the openssl command is not installed")

const dir = tempDir()
const certFile = join(dir.path, "cert.pem")
const keyFile = join(dir.path, "key.pem")
const otherKeyFile = join(dir.path, "other-key.pem")
const notPemFile = join(dir.path, "not-pem.pem")

/** A self-signed certificate for localhost and 127.0.0.1, valid for a day. */
const selfSigned = (cert: string, key: string) =>
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"].concat([
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout",
      key,
      "-out",
      cert
    ]),
    { stdio: "ignore" }
  )

beforeAll(() => {
  if (!canRun) return
  selfSigned(certFile, keyFile)
  selfSigned(join(dir.path, "other-cert.pem"), otherKeyFile)
  writeFileSync(notPemFile, "not a certificate\n")
})
afterAll(() => dir.remove())

/** GET over https, trusting only the test certificate. */
/** A GET on a connection of its own: Node's default agent keeps connections alive and would reuse one. */
const httpsGet = (url: string, ca: Buffer, headers: Record<string, string> = {}) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    get(url, { ca, headers, agent: false }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        body += chunk
      })
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
    }).on("error", reject)
  })

const tlsUrl = (node: RunningNode) =>
  Option.getOrThrowWith(node.tls, () => new Error("the node has no TLS listener")).url

describe.skipIf(!canRun)("TLS listener", () => {
  let node: RunningNode
  let ca: Buffer
  beforeAll(async () => {
    ca = readFileSync(certFile)
    node = await startNode({ tls: Option.some({ certFile, keyFile, port: 0 }), token: Option.none() })
  })
  afterAll(() => node.stop())

  it("serves the External Metrics API over https next to plain http", async () => {
    const discovery = await httpsGet(`${tlsUrl(node)}/apis/external.metrics.k8s.io/v1beta1`, ca)
    expect(discovery.status).toBe(200)
    expect(JSON.parse(discovery.body)).toMatchObject({
      kind: "APIResourceList",
      groupVersion: "external.metrics.k8s.io/v1beta1"
    })
    expect((await fetch(`${node.url}/healthz`)).status).toBe(200)
    expect(node.tls.pipe(Option.map((t) => t.port !== node.port))).toEqual(Option.some(true))
  })

  it("ingests a batch over wss and streams it to a wss tail subscriber", async () => {
    const tail = new WebSocket(`${tlsUrl(node).replace("https", "wss")}/v1/tail?service=checkout`, { ca })
    const delivered = new Promise<string>((resolve) =>
      tail.on("message", (data: Buffer) => resolve(data.toString("utf8")))
    )
    await new Promise((resolve, reject) => tail.once("open", resolve).once("error", reject))
    const agent = new TestAgent(tlsUrl(node), {}, { ca })
    expect(await agent.hello("agent-tls")).toMatchObject({ type: "welcome" })
    agent.send({ type: "batch", seq: 1, spans: [span({ trace: 7001 })], metrics: [], logs: [] })
    expect(await agent.ack(1)).toEqual({ type: "ack", seq: 1 })
    expect(JSON.parse(await delivered)).toMatchObject({
      type: "spans",
      spans: [{ traceId: traceId(7001) }]
    })
    const trace = await httpsGet(`${tlsUrl(node)}/v1/traces/${traceId(7001)}`, ca)
    expect(JSON.parse(trace.body).spans).toHaveLength(1)
    agent.close()
    tail.close()
  })

  it("applies the token on the TLS port too, and closes it when the node stops", async () => {
    const guarded = await startNode({
      tls: Option.some({ certFile, keyFile, port: 0 }),
      token: Option.some(Redacted.make("tls-secret"))
    })
    const url = tlsUrl(guarded)
    expect((await httpsGet(`${url}/v1/services`, ca)).status).toBe(401)
    const authorized = await httpsGet(`${url}/v1/services`, ca, { authorization: "Bearer tls-secret" })
    expect(authorized.status).toBe(200)
    expect((await httpsGet(`${url}/apis/external.metrics.k8s.io/v1beta1`, ca)).status).toBe(200)
    await guarded.stop()
    await expect(httpsGet(`${url}/healthz`, ca)).rejects.toThrow(/ECONNREFUSED/)
  })
})

describe.skipIf(!canRun)("TLS start-up errors", () => {
  /** Starts a node with `tls`; returns its TlsError, after checking the store was never opened. */
  const startupError = async (tls: ObsNode.TlsConfig) => {
    const data = join(dir.path, `data-${Math.random().toString(16).slice(2)}`)
    const exit = await Effect.runPromise(
      Effect.exit(
        Layer.launch(
          ObsNode.layer(ObsNode.makeConfig(data, { port: 0, host: "127.0.0.1", tls: Option.some(tls) }))
        )
      )
    )
    expect(existsSync(data)).toBe(false)
    return Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error instanceof Errors.TlsError
      ? exit.cause.error
      : undefined
  }

  it("names a missing key file", async () => {
    const missing = join(dir.path, "absent-key.pem")
    const error = await startupError({ certFile, keyFile: missing, port: 0 })
    expect(error?.file).toBe(missing)
    expect(error?.message).toContain(`cannot read TLS key ${missing}`)
  })

  it("names a certificate that is not PEM and a key that belongs to another certificate", async () => {
    const notPem = await startupError({ certFile: notPemFile, keyFile, port: 0 })
    expect(notPem?.file).toBe(notPemFile)
    expect(notPem?.message).toContain("is not a PEM certificate")
    const mismatch = await startupError({ certFile, keyFile: otherKeyFile, port: 0 })
    expect(mismatch?.file).toBe(otherKeyFile)
    expect(mismatch?.message).toContain("does not belong to the certificate")
  })

  it("names a peers' client CA file that is missing or holds no certificate", async () => {
    const missing = join(dir.path, "absent-ca.pem")
    const absent = await startupError({ certFile, keyFile, port: 0, clientCaFile: missing })
    expect(absent?.file).toBe(missing)
    expect(absent?.message).toContain(`cannot read TLS client CA ${missing}`)
    const notPem = await startupError({ certFile, keyFile, port: 0, clientCaFile: notPemFile })
    expect(notPem?.file).toBe(notPemFile)
    expect(notPem?.message).toContain("holds no PEM certificate")
  })
})

describe("TLS config", () => {
  it("reads III_OBS_TLS_* from the environment, both files or neither", () => {
    const fromEnv = (env: Record<string, string>) =>
      Effect.runSync(
        Effect.either(ObsNodeConfig.config).pipe(
          Effect.withConfigProvider(
            ConfigProvider.fromMap(new Map(Object.entries({ III_OBS_DATA: "/d", ...env })))
          )
        )
      )
    const none = fromEnv({})
    expect(Either.isRight(none) && Option.isNone(none.right.tls)).toBe(true)
    const both = fromEnv({ III_OBS_TLS_CERT: "/tls/tls.crt", III_OBS_TLS_KEY: "/tls/tls.key" })
    expect(Either.isRight(both) && both.right.tls).toEqual(
      Option.some({ certFile: "/tls/tls.crt", keyFile: "/tls/tls.key", port: 4321 })
    )
    const port = fromEnv({ III_OBS_TLS_CERT: "/c", III_OBS_TLS_KEY: "/k", III_OBS_TLS_PORT: "8443" })
    expect(Either.isRight(port) && Option.map(port.right.tls, (t) => t.port)).toEqual(Option.some(8443))
    const certOnly = fromEnv({ III_OBS_TLS_CERT: "/c" })
    expect(Either.isLeft(certOnly) && String(certOnly.left)).toContain("III_OBS_TLS_KEY")
    const clientCa = fromEnv({ III_OBS_TLS_CERT: "/c", III_OBS_TLS_KEY: "/k", III_OBS_TLS_CLIENT_CA: "/ca" })
    expect(Either.isRight(clientCa) && Option.map(clientCa.right.tls, (t) => t.clientCaFile)).toEqual(
      Option.some("/ca")
    )
    const caWithoutCert = fromEnv({ III_OBS_TLS_CLIENT_CA: "/ca" })
    expect(Either.isLeft(caWithoutCert) && String(caWithoutCert.left)).toContain(
      "peer client certificates are checked on the TLS listener: give --tls-cert and --tls-key too"
    )
  })
})
