/**
 * The path an HPA's external metric takes, end to end: a real kube-apiserver's aggregator proxies
 * `external.metrics.k8s.io` to obs over HTTPS, through the APIService and Service of
 * manifests/obs/external-metrics.yaml (the Service made an ExternalName to the node on 127.0.0.1:
 * no kube-proxy here). First as shipped (insecureSkipTLSVerify), then as production should run it
 * (caBundle), and a caBundle of another CA is refused.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { ObsNode } from "@iii/obs"
import { Context, Effect, Either, Exit, Layer, Option, Scope } from "effect"
import { parseAllDocuments } from "yaml"
import { KubeClient, type KubeObject } from "../../src/KubeClient.js"
import * as Cluster from "../fixtures/Cluster.js"
import { ingest, slowServerSpans } from "../fixtures/ObsAgent.js"

const canRunOpenssl = spawnSync("openssl", ["version"]).status === 0
if (!canRunOpenssl) console.warn("aggregator TLS test skipped: the openssl command is not installed")

const dir = mkdtempSync(join(tmpdir(), "iii-aggregator-tls-"))
const serviceName = "iii-obs-metrics.iii-system.svc"

/** A self-signed certificate for the name the aggregator verifies (and 127.0.0.1, for the test's own client). */
const certificate = (name: string) => {
  const cert = join(dir, `${name}.crt`)
  const key = join(dir, `${name}.key`)
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", `/CN=${serviceName}`].concat([
      "-addext",
      `subjectAltName=DNS:${serviceName},IP:127.0.0.1`,
      "-keyout",
      key,
      "-out",
      cert
    ]),
    { stdio: "ignore" }
  )
  return { cert, key }
}

const shipped = parseAllDocuments(
  readFileSync(new URL("../../../../manifests/obs/external-metrics.yaml", import.meta.url), "utf8")
).map((d) => d.toJS() as KubeObject)
const shippedOf = (kind: string) => {
  const doc = shipped.find((d) => d.kind === kind)
  if (doc === undefined) throw new Error(`manifests/obs/external-metrics.yaml has no ${kind}`)
  return doc
}

const metricPath = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/iii_p99_latency_ms"

describe.skipIf(Cluster.skipReason !== undefined || !canRunOpenssl)(
  "the API server's aggregator reaches obs' External Metrics API over TLS",
  () => {
    let cluster: Cluster.Cluster
    const scope = Effect.runSync(Scope.make())
    let tlsPort = 0
    const obsCert = canRunOpenssl ? certificate("obs") : { cert: "", key: "" }
    const otherCert = canRunOpenssl ? certificate("other") : { cert: "", key: "" }

    const admin = <A>(effect: Effect.Effect<A, unknown, KubeClient>) => cluster.admin.runPromise(effect)
    const applyDoc = (doc: KubeObject, path: string) =>
      admin(
        Effect.flatMap(KubeClient, (k) =>
          k.request({
            method: "PATCH",
            path,
            query: { fieldManager: "aggregator-test", force: "true" },
            contentType: "application/apply-patch+yaml",
            body: doc
          })
        )
      )
    const applyApiService = (spec: Record<string, unknown>) => {
      const doc = shippedOf("APIService")
      const shippedSpec = doc.spec as { service: Record<string, unknown> }
      return applyDoc(
        { ...doc, spec: { ...shippedSpec, service: { ...shippedSpec.service, port: tlsPort }, ...spec } },
        `/apis/apiregistration.k8s.io/v1/apiservices/${doc.metadata?.name}`
      )
    }
    /** The shipped APIService as the API server has it, with the aggregator's conditions. */
    const readApiService = () =>
      admin(
        Effect.flatMap(KubeClient, (k) =>
          k.request<{
            status?: { conditions?: ReadonlyArray<{ type: string; status: string; message?: string }> }
          }>({
            method: "GET",
            path: `/apis/apiregistration.k8s.io/v1/apiservices/${shippedOf("APIService").metadata?.name}`
          })
        )
      )
    /** The metric through the aggregator: the answer, or the status and message it failed with. */
    const readMetric = () =>
      admin(
        Effect.either(
          Effect.flatMap(KubeClient, (k) =>
            k.request<{ items: ReadonlyArray<{ metricName: string; value: string }> }>({
              method: "GET",
              path: metricPath,
              query: { labelSelector: "iii.io/composition=shop,iii.io/component=api" }
            })
          )
        )
      )

    beforeAll(async () => {
      cluster = await Cluster.start()
      const context = await Effect.runPromise(
        Layer.buildWithScope(
          ObsNode.layer(
            ObsNode.makeConfig(join(dir, "data"), {
              port: 0,
              host: "127.0.0.1",
              tls: Option.some({ certFile: obsCert.cert, keyFile: obsCert.key, port: 0 })
            })
          ),
          scope
        )
      )
      const node = Context.get(context, ObsNode.ObsNode)
      const tls = Option.getOrThrow(node.tls)
      tlsPort = tls.port
      await ingest(tls.url, slowServerSpans(20, { composition: "shop", namespace: "default" }), {
        ca: readFileSync(obsCert.cert)
      })
      // No kube-proxy: the shipped Service's name, made an ExternalName for the node's TLS port.
      const service = shippedOf("Service")
      await applyDoc(
        {
          ...service,
          spec: { type: "ExternalName", externalName: "localhost", ports: [{ name: "https", port: tlsPort }] }
        },
        `/api/v1/namespaces/iii-system/services/${service.metadata?.name}`
      )
    }, 120_000)

    afterAll(async () => {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      await cluster?.close()
      rmSync(dir, { recursive: true, force: true })
    })

    it("serves the metric through the shipped APIService (insecureSkipTLSVerify)", async () => {
      expect(shippedOf("APIService").spec).toMatchObject({ insecureSkipTLSVerify: true })
      await applyApiService({})
      const list = await Cluster.eventually(
        async () => Either.getOrUndefined(await readMetric()),
        "60 seconds",
        "the metric through the aggregator"
      )
      expect(list.items).toHaveLength(1)
      expect(list.items[0]?.metricName).toBe("iii_p99_latency_ms")
      expect(Number.parseFloat(list.items[0]?.value ?? "0")).toBeGreaterThan(100)
    }, 90_000)

    it("verifies the certificate against caBundle, and refuses one from another CA", async () => {
      const caBundle = (file: string) => readFileSync(file).toString("base64")
      await applyApiService({ insecureSkipTLSVerify: false, caBundle: caBundle(otherCert.cert) })
      // The refusal shows in the proxied answer (503 with the TLS error) or, once the aggregator's
      // availability check has run first, only in the APIService's Available condition: the proxy
      // then answers a bare 503 without dialling obs (seen on a loaded machine, the check won the race).
      const refused = await Cluster.eventually(
        async () => {
          const error = Either.getLeft(await readMetric()).pipe(Option.getOrUndefined)
          const available = (await readApiService()).status?.conditions?.find((c) => c.type === "Available")
          const seen = [
            ...(error === undefined ? [] : [String(error)]),
            ...(available?.status === "False" ? [`Available=False: ${available.message ?? ""}`] : [])
          ]
          return seen.find((text) => /x509/.test(text))
        },
        "60 seconds",
        "the aggregator refusing obs' certificate"
      )
      expect(refused).toMatch(/(503|Available=False).*x509: certificate signed by unknown authority/)
      await applyApiService({ insecureSkipTLSVerify: false, caBundle: caBundle(obsCert.cert) })
      const list = await Cluster.eventually(
        async () => Either.getOrUndefined(await readMetric()),
        "60 seconds",
        "the metric with caBundle"
      )
      expect(list.items[0]?.metricName).toBe("iii_p99_latency_ms")
    }, 150_000)
  }
)
