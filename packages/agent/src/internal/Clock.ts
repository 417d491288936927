/**
 * Unix time in nanoseconds with the monotonic clock's resolution. The origin comes from
 * `performance.timeOrigin` (microseconds; Date.now() has only milliseconds), so these times agree
 * with the kernel capture's (its monotonic clock shifted by the realtime offset) to within a few
 * microseconds: a command's log lines read from its pipes are placed among captured requests by them.
 */
import { performance } from "node:perf_hooks"

const origin =
  BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n - process.hrtime.bigint()

export const nowUnixNano = (): bigint => origin + process.hrtime.bigint()
