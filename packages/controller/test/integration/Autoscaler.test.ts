/**
 * The own scaling loop end to end: a real obs node (LMDB in a temp dir) gets slow requests of a
 * component from an agent connection; the controller, with `scaling: "controller"` and running as
 * its least-privileged identity, reads obs' External Metrics API and scales the Deployment through
 * its scale subresource. No HPA is rendered.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { ObsNode } from "@iii/obs"
import { Context, Duration, Effect, Exit, Layer, Option, Scope } from "effect"
import * as Controller from "../../src/Controller.js"
import { apply, getOption, KubeClient, type KubeObject, pathOf, resources } from "../../src/KubeClient.js"
import * as Cluster from "../fixtures/Cluster.js"
import { ingest, slowServerSpans } from "../fixtures/ObsAgent.js"

const ns = "auto"

describe.skipIf(Cluster.skipReason !== undefined)(
  "own scaling loop against real obs and a real API server",
  () => {
    let cluster: Cluster.Cluster
    let controller: Cluster.RunningController
    let obsUrl = ""
    const scope = Effect.runSync(Scope.make())
    const dataDir = mkdtempSync(join(tmpdir(), "iii-controller-obs-"))

    beforeAll(async () => {
      cluster = await Cluster.start()
      const context = await Effect.runPromise(
        Layer.buildWithScope(
          ObsNode.layer(ObsNode.makeConfig(dataDir, { port: 0, host: "127.0.0.1", nodeId: "test" })),
          scope
        )
      )
      obsUrl = Context.get(context, ObsNode.ObsNode).url
      await cluster.admin.runPromise(
        Effect.flatMap(KubeClient, (k) =>
          k.request({
            method: "POST",
            path: "/api/v1/namespaces",
            body: { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } }
          })
        )
      )
      controller = await Cluster.startController(cluster, {
        leaderElection: undefined,
        render: { ...Controller.defaultSettings.render, scaling: "controller" },
        autoscaler: {
          obsUrl,
          obsToken: undefined,
          interval: Duration.millis(200),
          downscaleWindow: Duration.minutes(5)
        }
      })
    }, 120_000)

    afterAll(async () => {
      await controller?.stop()
      await Effect.runPromise(Scope.close(scope, Exit.void))
      rmSync(dataDir, { recursive: true, force: true })
      await cluster?.close()
    })

    it("scales a Deployment up on obs' p99 latency through the scale subresource", async () => {
      await ingest(obsUrl, slowServerSpans(50, { composition: "scaled", namespace: ns }))
      await cluster.admin.runPromise(
        apply(
          resources.ServiceComposition,
          {
            apiVersion: "iii.io/v1",
            kind: "ServiceComposition",
            metadata: { name: "scaled", namespace: ns },
            spec: {
              components: [
                {
                  name: "api",
                  image: "api:v1",
                  replicas: { min: 1, max: 10 },
                  scalingPolicy: { metric: "p99_latency", threshold: "50ms" }
                }
              ]
            }
          },
          { fieldManager: "test" }
        )
      )
      // About 120 ms observed against 50 ms: ceil(1 · 2.4) = 3 replicas, from the bootstrapped 1.
      const scaled = await Cluster.eventually(async () => {
        const d = Option.getOrUndefined(
          await cluster.admin.runPromise(getOption(resources.Deployment, ns, "scaled-api"))
        )
        return (d?.spec as { replicas?: number } | undefined)?.replicas === 3 ? d : undefined
      })
      const managers = (
        (scaled.metadata?.managedFields ?? []) as ReadonlyArray<{ manager: string; subresource?: string }>
      ).map((m) => `${m.manager}${m.subresource === undefined ? "" : `/${m.subresource}`}`)
      expect(managers).toContain("iii-autoscaler/scale")
      const hpas = await cluster.admin.runPromise(
        Effect.flatMap(KubeClient, (k) =>
          k.request<{ items: ReadonlyArray<KubeObject> }>({
            method: "GET",
            path: pathOf(resources.HorizontalPodAutoscaler, ns)
          })
        )
      )
      expect(hpas.items).toEqual([])
    })
  }
)
