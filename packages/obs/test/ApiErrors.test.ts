/**
 * Parameters the store cannot hold are 400s naming the parameter, not store failures; every 5xx the
 * API answers is logged with its cause.
 */
import { Effect, Layer, Logger, Option } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { StoreError } from "../src/Errors.js"
import * as LmdbStore from "../src/LmdbStore.js"
import * as ObsNode from "../src/ObsNode.js"
import { SpanReader } from "../src/Store.js"
import { getJson, type RunningNode, startNode, tempDir } from "./fixtures/Node.js"

describe("long identifiers", () => {
  let node: RunningNode
  beforeAll(async () => {
    node = await startNode()
  })
  afterAll(() => node.stop())

  it("a correlation id longer than ingest accepts (256) is a 400 naming the parameter", async () => {
    for (const length of [257, 1_900, 2_000, 10_000]) {
      const answer = await getJson(`${node.url}/v1/correlate/${"x".repeat(length)}`)
      expect(answer.status, `length ${length}`).toBe(400)
      expect(answer.body.parameter).toBe("correlationId")
      expect(answer.body.error).toContain("256")
    }
    expect((await getJson(`${node.url}/v1/correlate/${"x".repeat(256)}`)).status).toBe(404)
  })

  it("services and routes no index key can hold find nothing instead of failing", async () => {
    const service = encodeURIComponent("€".repeat(700))
    const red = await getJson(`${node.url}/v1/services/${service}/red`)
    expect(red.status).toBe(200)
    expect(red.body.points.every((p: { requests: number }) => p.requests === 0)).toBe(true)
    const route = encodeURIComponent("€".repeat(500))
    expect((await getJson(`${node.url}/v1/services/checkout/red?route=${route}`)).status).toBe(200)
    const long = await getJson(`${node.url}/v1/services/${"s".repeat(3000)}/red?route=${route}`)
    expect(long.status).toBe(200)
    expect((await getJson(`${node.url}/v1/traces?service=${route}`)).status).toBe(200)
    expect((await getJson(`${node.url}/v1/traces?service=${service}`)).body.parameter).toBe("service")
  })
})

describe("5xx answers", () => {
  it("are logged with their cause", async () => {
    const dir = tempDir()
    const logged: Array<{ level: string; message: string }> = []
    const logger = Logger.replace(
      Logger.defaultLogger,
      Logger.make(({ logLevel, message }) =>
        logged.push({
          level: logLevel.label,
          message: (Array.isArray(message) ? message : [message]).join(" ")
        })
      )
    )
    // The LMDB store, with a reader whose `services` fails as a broken disk would.
    const failingReader = Layer.effect(
      SpanReader,
      Effect.map(SpanReader, (reader) => ({
        ...reader,
        services: () =>
          Effect.fail(new StoreError({ operation: "services", cause: new Error("EIO: i/o error, read") }))
      }))
    )
    const stores = Layer.provideMerge(failingReader, LmdbStore.layer({ path: dir.path }))
    const cfg = ObsNode.makeConfig(dir.path, { port: 0, host: "127.0.0.1", token: Option.none() })
    await Effect.gen(function* () {
      const node = yield* ObsNode.ObsNode
      const answer = yield* Effect.promise(() => getJson(`${node.url}/v1/services`))
      expect(answer.status).toBe(500)
      expect(answer.body.error).toBe("store failure; see the node's log")
    }).pipe(
      Effect.provide(ObsNode.layerOn(cfg).pipe(Layer.provide(stores), Layer.provide(logger))),
      Effect.runPromise
    )
    dir.remove()
    const line = logged.find((l) => l.level === "ERROR" && l.message.includes("/v1/services"))
    expect(line?.message).toContain("500")
    expect(line?.message).toContain("EIO: i/o error, read")
  })
})
