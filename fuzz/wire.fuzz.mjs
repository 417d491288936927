// Fuzz target: the wire decoder (@iii/core WireProtocol.decodeFrame), what every obs node runs on
// bytes from the network. It must never throw, fail only with a known code, and any frame it
// accepts must survive encodeFrame → decodeFrame unchanged.
import { isDeepStrictEqual } from "node:util"
import { Either } from "effect"
import { WireProtocol } from "../packages/core/dist/index.js"

const codes = new Set(WireProtocol.WireErrorCode.literals)

export function fuzz(data) {
  const decoded = WireProtocol.decodeFrame(data, { maxFrameBytes: 1 << 20 })
  if (Either.isLeft(decoded)) {
    if (!codes.has(decoded.left.code) || typeof decoded.left.message !== "string")
      throw new Error(`decodeFrame failed without a known code: ${decoded.left.code}`)
    return
  }
  const again = WireProtocol.decodeFrame(WireProtocol.encodeFrame(decoded.right))
  if (Either.isLeft(again)) throw new Error(`a decoded frame does not decode again: ${again.left.message}`)
  if (!isDeepStrictEqual(again.right, decoded.right))
    throw new Error("a decoded frame changes through encode/decode")
}
