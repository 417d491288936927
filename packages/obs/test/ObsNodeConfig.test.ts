import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { ConfigProvider, Duration, Effect, Either, Option, Redacted } from "effect"
import { describe, expect, it } from "vitest"
import * as ObsNodeConfig from "../src/ObsNodeConfig.js"
import { tempDir } from "./fixtures/Node.js"

const fromEnv = (env: Record<string, string>) =>
  Effect.runSync(
    Effect.either(ObsNodeConfig.config).pipe(
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
    )
  )

describe("ObsNodeConfig.config", () => {
  it("reads the environment, with the documented defaults", () => {
    const cfg = fromEnv({ III_OBS_DATA: "/data" })
    expect(Either.isRight(cfg)).toBe(true)
    if (Either.isLeft(cfg)) return
    expect(cfg.right).toMatchObject({ dataDir: "/data", port: 4320, host: "0.0.0.0", otlpGrpcPort: 4317 })
    expect(Duration.toHours(cfg.right.retention)).toBe(168)
    expect(Option.isNone(cfg.right.token)).toBe(true)
  })

  it("takes the limits from the environment, naming a variable whose value is wrong", () => {
    const cfg = fromEnv({
      III_OBS_DATA: "/d",
      III_OBS_MAX_CLOCK_SKEW: "5m",
      III_OBS_HELLO_TIMEOUT: "3s",
      III_OBS_PING_INTERVAL: "15s",
      III_OBS_TAIL_STALL_TIMEOUT: "1m",
      III_OBS_MAX_INGEST_CONNECTIONS: "100",
      III_OBS_MAX_TAIL_SUBSCRIBERS: "8",
      III_OBS_MAX_PEER_CONNECTIONS: "16"
    })
    expect(Either.isRight(cfg)).toBe(true)
    if (Either.isLeft(cfg)) return
    expect(Duration.toMillis(cfg.right.maxClockSkew)).toBe(300_000)
    expect(Duration.toMillis(cfg.right.helloTimeout)).toBe(3_000)
    expect(Duration.toMillis(cfg.right.pingInterval)).toBe(15_000)
    expect(Duration.toMillis(cfg.right.tailStallTimeout)).toBe(60_000)
    expect(cfg.right).toMatchObject({
      maxIngestConnections: 100,
      maxTailSubscribers: 8,
      maxPeerConnections: 16
    })
    const bad = fromEnv({ III_OBS_DATA: "/d", III_OBS_MAX_TAIL_SUBSCRIBERS: "0" })
    expect(Either.isLeft(bad) && JSON.stringify(bad.left)).toContain("III_OBS_MAX_TAIL_SUBSCRIBERS")
    const skew = fromEnv({ III_OBS_DATA: "/d", III_OBS_MAX_CLOCK_SKEW: "an hour" })
    expect(Either.isLeft(skew) && JSON.stringify(skew.left)).toContain("III_OBS_MAX_CLOCK_SKEW")
  })

  it("takes port, host, retention and a token or token file", () => {
    const dir = tempDir()
    try {
      const file = join(dir.path, "token")
      writeFileSync(file, "from-file\n")
      const cfg = fromEnv({
        III_OBS_DATA: "/d",
        III_OBS_PORT: "9000",
        III_OBS_HOST: "127.0.0.1",
        III_OBS_RETENTION: "36h",
        III_OBS_TOKEN_FILE: file
      })
      expect(Either.isRight(cfg)).toBe(true)
      if (Either.isLeft(cfg)) return
      expect(cfg.right).toMatchObject({ port: 9000, host: "127.0.0.1" })
      expect(Duration.toHours(cfg.right.retention)).toBe(36)
      expect(Option.map(cfg.right.token, Redacted.value)).toEqual(Option.some("from-file"))
      const direct = fromEnv({ III_OBS_DATA: "/d", III_OBS_TOKEN: "direct" })
      expect(Either.isRight(direct) && Option.map(direct.right.token, Redacted.value)).toEqual(
        Option.some("direct")
      )
    } finally {
      dir.remove()
    }
  })

  it("refuses a missing data dir, a bad retention and an unreadable token file", () => {
    expect(Either.isLeft(fromEnv({}))).toBe(true)
    const retention = fromEnv({ III_OBS_DATA: "/d", III_OBS_RETENTION: "forever" })
    expect(Either.isLeft(retention) && String(retention.left)).toContain("III_OBS_RETENTION")
    const token = fromEnv({ III_OBS_DATA: "/d", III_OBS_TOKEN_FILE: "/nonexistent/token" })
    expect(Either.isLeft(token) && String(token.left)).toContain("cannot read token file")
  })
})

describe("ObsNodeConfig.load", () => {
  const load = (flags: ObsNodeConfig.Flags, env: Record<string, string>) =>
    Effect.runSync(
      Effect.either(ObsNodeConfig.load(flags)).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
      )
    )

  it("takes each flag given over its variable, and each variable over its default", () => {
    const cfg = load(
      { port: 9001, retention: "2d" },
      { III_OBS_DATA: "/env-data", III_OBS_PORT: "9000", III_OBS_HOST: "127.0.0.1", III_OBS_RETENTION: "1d" }
    )
    expect(Either.isRight(cfg)).toBe(true)
    if (Either.isLeft(cfg)) return
    expect(cfg.right).toMatchObject({ dataDir: "/env-data", port: 9001, host: "127.0.0.1" })
    expect(Duration.toHours(cfg.right.retention)).toBe(48)
  })

  it("names the flag or the variable whose value is wrong", () => {
    const flag = load({ data: "/d", port: 70_000 }, {})
    expect(Either.isLeft(flag) && flag.left.message).toBe("--port: 70000 is not a port number")
    const variable = load({ data: "/d" }, { III_OBS_PORT: "http" })
    expect(Either.isLeft(variable) && variable.left.message).toBe("III_OBS_PORT: http is not a port number")
    const missing = load({}, {})
    expect(Either.isLeft(missing) && missing.left.message).toContain("--data: the data directory is required")
    const grpc = load({ data: "/d" }, { III_OBS_OTLP_GRPC_PORT: "four" })
    expect(Either.isLeft(grpc) && grpc.left.message).toBe("III_OBS_OTLP_GRPC_PORT: four is not a port number")
  })

  it("takes the OTLP/gRPC port from its flag or variable, 0 turning it off; makeConfig leaves it off", () => {
    const flag = load({ data: "/d", otlpGrpcPort: 0 }, { III_OBS_OTLP_GRPC_PORT: "14317" })
    expect(Either.isRight(flag) && flag.right.otlpGrpcPort).toBe(0)
    const variable = load({ data: "/d" }, { III_OBS_OTLP_GRPC_PORT: "14317" })
    expect(Either.isRight(variable) && variable.right.otlpGrpcPort).toBe(14317)
    expect(ObsNodeConfig.makeConfig("/d").otlpGrpcPort).toBe(0)
  })

  it("takes the OTLP export URL and headers from the flags over the variables; off by default", () => {
    const off = load({ data: "/d" }, {})
    expect(Either.isRight(off) && Option.isNone(off.right.exportOtlp)).toBe(true)
    const env = {
      III_OBS_EXPORT_OTLP: "http://collector:4318/",
      III_OBS_EXPORT_HEADERS: "authorization=Bearer abc, x-scope-orgid=team-a",
      III_OBS_EXPORT_QUEUE_BYTES: "1048576"
    }
    const variable = load({ data: "/d" }, env)
    expect(Either.isRight(variable) && Option.getOrUndefined(variable.right.exportOtlp)).toMatchObject({
      url: "http://collector:4318",
      headers: [
        ["authorization", "Bearer abc"],
        ["x-scope-orgid", "team-a"]
      ],
      maxQueueBytes: 1_048_576
    })
    const flags = load(
      { data: "/d", exportOtlp: "https://tempo.example/otlp", exportHeaders: ["x-token=1=2"] },
      env
    )
    expect(Either.isRight(flags) && Option.getOrUndefined(flags.right.exportOtlp)).toMatchObject({
      url: "https://tempo.example/otlp",
      headers: [["x-token", "1=2"]]
    })
  })

  it("names the export flag or variable whose value is wrong", () => {
    const message = (flags: ObsNodeConfig.Flags, env: Record<string, string> = {}) => {
      const r = load({ data: "/d", ...flags }, env)
      return Either.isLeft(r) ? r.left.message : undefined
    }
    expect(message({ exportOtlp: "ftp://x" })).toBe(
      "--export-otlp: ftp://x is not an http:// or https:// URL"
    )
    expect(message({}, { III_OBS_EXPORT_OTLP: "collector" })).toBe(
      "III_OBS_EXPORT_OTLP: collector is not a URL"
    )
    expect(message({ exportOtlp: "http://c:4318", exportHeaders: ["novalue"] })).toBe(
      '--export-header: "novalue" is not a header K=V'
    )
    expect(message({ exportHeaders: ["a=b"] })).toBe(
      "--export-header: export headers need --export-otlp (or III_OBS_EXPORT_OTLP)"
    )
    expect(message({}, { III_OBS_EXPORT_OTLP: "http://c", III_OBS_EXPORT_QUEUE_BYTES: "lots" })).toBe(
      "III_OBS_EXPORT_QUEUE_BYTES: lots is not a positive number of bytes"
    )
  })
})
