import { execFileSync, spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { get } from "node:https"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { NodeContext } from "@effect/platform-node"
import { Cause, ConfigProvider, Effect, Exit, Fiber, Logger } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { run } from "../src/Cli.js"

const dir = mkdtempSync(join(tmpdir(), "iii-cli-obs-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Runs `iii obs …` in-process with `env` as the environment, collecting log messages. */
const obsWithEnv = (env: Record<string, string>, lines: Array<string>, ...args: Array<string>) =>
  run(["node", "iii", "obs", ...args]).pipe(
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))),
    Effect.provide(NodeContext.layer),
    Effect.provide(
      Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ message }) => lines.push(String(message)))
      )
    )
  )

const obs = (lines: Array<string>, ...args: Array<string>) => obsWithEnv({}, lines, ...args)

/** Waits for the start-up log line. */
const listeningLine = async (lines: ReadonlyArray<string>) => {
  for (;;) {
    const line = lines.find((l) => l.includes("listening on"))
    if (line !== undefined) return line
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe("iii obs", () => {
  it("starts a node, logs where it listens, and stops when interrupted", async () => {
    const lines: Array<string> = []
    const token = join(dir, "token")
    writeFileSync(token, "cli-secret\n")
    const fiber = Effect.runFork(
      obs(
        lines,
        "--data",
        join(dir, "data"),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--token-file",
        token,
        "--retention",
        "3d"
      )
    )
    const listening = await listeningLine(lines)
    const port = /127\.0\.0\.1:(\d+)/.exec(listening)?.[1]
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200)
    expect((await fetch(`http://127.0.0.1:${port}/v1/services`)).status).toBe(401)
    const authorized = await fetch(`http://127.0.0.1:${port}/v1/services`, {
      headers: { authorization: "Bearer cli-secret" }
    })
    expect(authorized.status).toBe(200)
    expect(lines.some((l) => l.includes("without a token"))).toBe(false)
    const exit = await Effect.runPromise(Fiber.interrupt(fiber))
    expect(Exit.isInterrupted(exit)).toBe(true)
  })

  it("refuses a bad retention and an empty token file with the flag named", async () => {
    const bad = await Effect.runPromise(Effect.exit(obs([], "--data", join(dir, "d2"), "--retention", "7x")))
    expect(Exit.isFailure(bad) && JSON.stringify(bad.cause)).toContain("--retention")
    const empty = join(dir, "empty-token")
    writeFileSync(empty, "")
    const noToken = await Effect.runPromise(
      Effect.exit(obs([], "--data", join(dir, "d3"), "--token-file", empty))
    )
    expect(Exit.isFailure(noToken) && JSON.stringify(noToken.cause)).toContain("is empty")
  })

  it("turns OTLP export on with --export-otlp and repeated --export-header, and names a bad URL", async () => {
    const bad = await Effect.runPromise(
      Effect.exit(obs([], "--data", join(dir, "d7"), "--export-otlp", "ftp://collector"))
    )
    expect(Exit.isFailure(bad) && JSON.stringify(bad.cause)).toContain(
      "ftp://collector is not an http:// or https:// URL"
    )
    const lines: Array<string> = []
    const fiber = Effect.runFork(
      obs(
        lines,
        "--data",
        join(dir, "d8"),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--otlp-grpc-port",
        "0",
        "--export-otlp",
        "http://127.0.0.1:9",
        "--export-header",
        "authorization=Bearer x",
        "--export-header",
        "x-scope-orgid=a"
      )
    )
    const port = /127\.0\.0\.1:(\d+)/.exec(await listeningLine(lines))?.[1]
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    expect(metrics).toContain("iii_obs_otlp_export_queue_requests 0")
    await Effect.runPromise(Fiber.interrupt(fiber))
  })
})

const canRunOpenssl = spawnSync("openssl", ["version"]).status === 0
if (!canRunOpenssl) console.warn("skipping iii obs TLS tests: the openssl command is not installed")

describe.skipIf(!canRunOpenssl)("iii obs with TLS", () => {
  const cert = join(dir, "tls.crt")
  const key = join(dir, "tls.key")
  const certificate = () => {
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"].concat([
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        key,
        "-out",
        cert
      ]),
      { stdio: "ignore" }
    )
    return readFileSync(cert)
  }
  const httpsStatus = (url: string, ca: Buffer) =>
    new Promise<number>((resolve, reject) => {
      get(url, { ca }, (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      }).on("error", reject)
    })

  it("serves https on the TLS port, configured from the III_OBS_* variables the StatefulSet sets", async () => {
    const ca = certificate()
    const lines: Array<string> = []
    const env = {
      III_OBS_DATA: join(dir, "tls-data"),
      III_OBS_PORT: "0",
      III_OBS_HOST: "127.0.0.1",
      III_OBS_TLS_CERT: cert,
      III_OBS_TLS_KEY: key,
      III_OBS_TLS_PORT: "0"
    }
    const fiber = Effect.runFork(obsWithEnv(env, lines))
    const line = await listeningLine(lines)
    const tlsPort = /TLS on 127\.0\.0\.1:(\d+)/.exec(line)?.[1]
    expect(tlsPort).toBeDefined()
    expect(await httpsStatus(`https://127.0.0.1:${tlsPort}/apis/external.metrics.k8s.io/v1beta1`, ca)).toBe(
      200
    )
    await Effect.runPromise(Fiber.interrupt(fiber))
  })

  it("wants --tls-cert and --tls-key together, and names a missing key file", async () => {
    const alone = await Effect.runPromise(Effect.exit(obs([], "--data", join(dir, "d4"), "--tls-cert", cert)))
    expect(Exit.isFailure(alone) && JSON.stringify(alone.cause)).toContain("--tls-key is missing")
    const keyOnly = await Effect.runPromise(
      Effect.exit(obsWithEnv({ III_OBS_TLS_KEY: key }, [], "--data", join(dir, "d5")))
    )
    expect(Exit.isFailure(keyOnly) && JSON.stringify(keyOnly.cause)).toContain("--tls-cert is missing")
    const absent = join(dir, "absent.key")
    const missing = await Effect.runPromise(
      Effect.exit(obs([], "--data", join(dir, "d6"), "--tls-cert", cert, "--tls-key", absent, "--port", "0"))
    )
    expect(Exit.isFailure(missing) && Cause.pretty(missing.cause)).toContain(`cannot read TLS key ${absent}`)
  })

  it("wants --tls-client-ca with the TLS listener, and names a missing CA file", async () => {
    const caOnly = await Effect.runPromise(
      Effect.exit(obs([], "--data", join(dir, "d7"), "--tls-client-ca", cert))
    )
    expect(Exit.isFailure(caOnly) && JSON.stringify(caOnly.cause)).toContain(
      "peer client certificates are checked on the TLS listener: give --tls-cert and --tls-key too"
    )
    const absent = join(dir, "absent-ca.crt")
    const missing = await Effect.runPromise(
      Effect.exit(
        obs(
          [],
          "--data",
          join(dir, "d8"),
          "--tls-cert",
          cert,
          "--tls-key",
          key,
          "--tls-client-ca",
          absent,
          "--port",
          "0"
        )
      )
    )
    expect(Exit.isFailure(missing) && Cause.pretty(missing.cause)).toContain(
      `cannot read TLS client CA ${absent}`
    )
  })
})
