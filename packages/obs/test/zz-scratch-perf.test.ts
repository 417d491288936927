import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { it } from "vitest"
import * as LmdbStore from "../src/LmdbStore.js"
import { batch, span, t0 } from "./fixtures/Spans.js"

it("perf", () =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const s = yield* LmdbStore.make({ path: mkdtempSync(join(tmpdir(), "perf-")) })
        const routes = ["/a", "/b/{id}", "/c", "/d"]
        const batches = Array.from({ length: 400 }, (_, b) =>
          batch(`agent-${b % 4}`, Math.floor(b / 4) + 1, Array.from({ length: 500 }, (_, i) =>
            span({ trace: b * 500 + i, service: `svc-${i % 5}`, startTimeUnixNano: t0 + BigInt(b * 500 + i) * 10_000n, http: { method: "GET", route: routes[i % 4] ?? "/", statusCode: i % 50 === 0 ? 500 : 200 } })))
        )
        const start = performance.now()
        const pending = []
        for (let i = 0; i < batches.length; i += 8) pending.push(Effect.runPromise(s.writer.write(batches.slice(i, i + 8))))
        yield* Effect.promise(() => Promise.all(pending))
        const secs = (performance.now() - start) / 1000
        console.log(`spans/s ${(200_000 / secs).toFixed(0)} in ${secs.toFixed(2)}s`)
      })
    )
  ), 120_000)
