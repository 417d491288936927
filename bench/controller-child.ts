/**
 * The controller process of bench/controller.ts: runs the controller against $BENCH_KUBECONFIG and
 * prints one JSON line of counters every 250 ms; SIGUSR2 asks it for a full resync.
 */
import * as Controller from "@iii/controller/Controller"
import * as KubeClient from "@iii/controller/KubeClient"
import { Effect, Schedule } from "effect"

const program = Effect.gen(function* () {
  const client = yield* KubeClient.KubeClient
  const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 16)
  const controller = yield* Controller.make({ ...Controller.defaultSettings, concurrency })
  yield* controller.synced
  process.on("SIGUSR2", () => Effect.runFork(controller.resync))
  const report = Effect.gen(function* () {
    const reconciles = yield* controller.reconciles
    // With --expose-gc (CONTROLLER_NODE_OPTIONS), heapUsed is the live heap, not heap plus garbage.
    ;(globalThis as { gc?: () => void }).gc?.()
    const { rss, heapUsed } = process.memoryUsage()
    console.log(JSON.stringify({ ...client.counts(), reconciles, rss, heapUsed }))
  })
  return yield* report.pipe(Effect.repeat(Schedule.spaced("250 millis")))
}).pipe(Effect.scoped, Effect.provide(KubeClient.layer({ kubeconfig: process.env.BENCH_KUBECONFIG ?? "" })))

Effect.runPromise(program).catch((e: unknown) => {
  console.error(e)
  process.exit(1)
})
