/**
 * The agent yields the CPU to the apps it traces: `lower` sets the nice value of every thread of this
 * process (Linux sets priority per thread, and V8's collector threads and libuv's pool exist before
 * any of our code runs; threads started later inherit it). When a core is contended, the traced apps
 * then run first and the agent catches up from its buffers, or sheds telemetry with counted drops,
 * instead of taking CPU from them: never the reason an app slows down. Raising the nice value needs
 * no privilege.
 *
 * @since 0.1.0
 */
import { readdirSync } from "node:fs"
import { setPriority } from "node:os"
import * as Errors from "@iii/core/Errors"
import * as Effect from "effect/Effect"

/** The agent's default nice value: a ~10% CPU share against a normal-priority thread on a busy core. */
export const defaultNice = 10

/**
 * Sets `nice` (0 = normal, 19 = lowest) on every thread of this process; returns how many threads it
 * changed and why the others (e.g. exited meanwhile) failed.
 */
export const lower = (
  nice: number
): Effect.Effect<{ readonly threads: number; readonly failures: ReadonlyArray<string> }> =>
  Effect.sync(() => {
    const failures: Array<string> = []
    let threads = 0
    let tids: Array<string>
    try {
      tids = readdirSync("/proc/self/task")
    } catch {
      tids = [String(process.pid)]
    }
    for (const tid of tids) {
      try {
        setPriority(Number(tid), nice)
        threads++
      } catch (error) {
        failures.push(`thread ${tid}: ${Errors.messageOf(error)}`)
      }
    }
    return { threads, failures }
  })
