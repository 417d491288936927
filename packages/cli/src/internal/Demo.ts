/**
 * `iii up`'s built-in demo: a composition of three services (`DemoServices.ts`) run with local
 * commands, and the gentle load that `iii up` sends to its front end.
 */
import { randomBytes } from "node:crypto"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { ServiceComposition } from "@iii/core"
import { Effect, Either, Schedule } from "effect"

// Built, the services are a .js beside this module; from sources (tests), Node runs the .ts.
const servicesScript = () => {
  const built = fileURLToPath(new URL("./DemoServices.js", import.meta.url))
  return existsSync(built) ? built : built.replace(/\.js$/, ".ts")
}

/** The demo composition: what `iii up` runs when given no file. */
export const composition = (): ServiceComposition.ServiceComposition => {
  const component = (name: string) => ({
    name,
    image: `ghcr.io/iii/demo-${name}:0.1.0`,
    command: [process.execPath, servicesScript(), name]
  })
  return Either.getOrThrow(
    ServiceComposition.validate({
      apiVersion: ServiceComposition.apiVersion,
      kind: ServiceComposition.kind,
      metadata: { name: "shop" },
      spec: { components: [component("frontend"), component("catalog"), component("payments")] }
    })
  )
}

/** The component the load goes to. */
export const entry = "frontend"

export interface DemoRequest {
  readonly method: "GET" | "POST"
  readonly path: string
  readonly body?: string
  readonly correlationId?: string
}

/** The n-th request of the load: browsing, a slow search now and then, checkouts (some of unknown products). */
export const request = (n: number): DemoRequest => {
  if (n % 4 === 3)
    return {
      method: "POST",
      path: "/checkout",
      body: JSON.stringify({ productId: n % 13 === 0 ? 99 : 1 + (n % 60) }),
      correlationId: `order-${n}`
    }
  if (n % 5 === 0) return { method: "GET", path: "/products" }
  return { method: "GET", path: `/products/${n % 17 === 0 ? 404 : 1 + (n % 60)}` }
}

/** A `traceparent` for a new trace: what a browser or a gateway with tracing would send. */
const traceparent = () => `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`

/** Three requests a second to `baseUrl`, forever; failures are the demo's, not the load's. */
export const load = (baseUrl: string) => {
  let n = 0
  const one = Effect.suspend(() => {
    const r = request(n++)
    const headers: Record<string, string> = {
      traceparent: traceparent(),
      ...(r.correlationId !== undefined && { "x-iii-correlation-id": r.correlationId }),
      ...(r.body !== undefined && { "content-type": "application/json" })
    }
    return Effect.tryPromise(() =>
      fetch(`${baseUrl}${r.path}`, {
        method: r.method,
        headers,
        ...(r.body !== undefined && { body: r.body })
      }).then((res) => res.arrayBuffer())
    )
  }).pipe(Effect.ignore)
  return one.pipe(Effect.repeat(Schedule.spaced("333 millis")))
}
