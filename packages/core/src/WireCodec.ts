/**
 * The wire protocol's codec (the protocol itself, its frames' schemas and its state machine, is
 * `WireProtocol`, which re-exports all of this): frames to bytes and back. Apart from `WireProtocol`
 * so that the node agent, which only encodes its frames and decodes obs's, does not load
 * `effect/Schema` and the `fast-check` that comes with it (packages/agent README, "Memory").
 */
export {
  BatchEncoder,
  type DecodeOptions,
  decodeFrame,
  encodeFrame,
  isNativeAccelerated
} from "./internal/wireCodec.js"
export { defaultMaxFrameBytes, PROTOCOL_VERSION } from "./internal/wireFraming.js"
