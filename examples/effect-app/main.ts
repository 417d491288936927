import { createServer } from "node:http"
import { HttpClient, HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import * as IiiTelemetry from "@iii/core/IiiTelemetry"
import { Effect, Layer, type Redacted } from "effect"

// GET /checkout/:id logs, prices the order in a span of its own, and asks GET /price/:id over HTTP.
const router = HttpRouter.empty.pipe(
  HttpRouter.get(
    "/checkout/:id",
    Effect.gen(function* () {
      const { id } = yield* HttpRouter.params
      const request = yield* HttpServerRequest.HttpServerRequest
      yield* Effect.logInfo(`checkout ${id}`)
      const price = yield* HttpClient.get(`http://${request.headers.host}/price/${id}`).pipe(
        Effect.flatMap((response) => response.text),
        Effect.withSpan("price order", { attributes: { "order.id": id } })
      )
      return yield* HttpServerResponse.json({ id, price: Number(price) })
    })
  ),
  HttpRouter.get("/price/:id", HttpServerResponse.text("42"))
)

/** The checkout app on `port`, its spans and logs sent to the obs node at `obs`. */
export const CheckoutApp = (options: { port: number; obs: string; token?: Redacted.Redacted }) =>
  HttpServer.serve(router).pipe(
    Layer.provide(NodeHttpServer.layer(createServer, { port: options.port, host: "127.0.0.1" })),
    Layer.provide(NodeHttpClient.layerUndici),
    Layer.provide(IiiTelemetry.layer({ obs: options.obs, serviceName: "checkout", token: options.token }))
  )
