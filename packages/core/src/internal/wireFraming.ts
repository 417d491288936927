/**
 * The frame envelope `[version, type, ...fields]`: the protocol version and the frame type numbers,
 * and the default frame limit. `WireProtocol` publishes the version and the limit; they live here so
 * that the codec, which `WireProtocol` re-exports, depends on them without depending on it.
 */

/** The protocol version this codec writes and accepts. */
export const PROTOCOL_VERSION = 1

/** Default limit on an encoded frame: 16 MiB. */
export const defaultMaxFrameBytes = 16 * 1024 * 1024

export const HELLO = 1
export const WELCOME = 2
export const BATCH = 3
export const ACK = 4
export const ERROR = 5
