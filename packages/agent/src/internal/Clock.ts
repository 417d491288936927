/** Unix time in nanoseconds with the monotonic clock's resolution (Date.now() has only milliseconds). */
const origin = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint()

export const nowUnixNano = (): bigint => origin + process.hrtime.bigint()
