/**
 * Bloom filters of the trace index's sealed epochs (Keys.ts): which trace ids an epoch may hold, so
 * that a lookup reads only the epochs that may (Grafana Tempo keeps one per block). The writer builds
 * an epoch's filter from the ids it indexed in it and stores it when the epoch is sealed, in the same
 * transaction; at open it rebuilds, from the index itself, the filter of any epoch left without one
 * (a writer that stopped before sealing, a filter that does not decode). Readers keep them in memory.
 *
 * Encoding: version (1), probes, 2 bytes 0, bit count (u32 BE), then the bits, so filters built with
 * other settings still decode. 16 bits and 11 probes per id: a false positive rate of about 0.05% per
 * epoch (10 bits and 7 probes gave 0.8%: with 50 epochs, 0.4 needless group reads per lookup, each
 * a cursor seek and maybe a page not in memory, for 40 KB instead of 25 KB per 20,000 ids).
 */
import { HashRing } from "@iii/core"

const version = 1
const probes = 11
const bitsPerId = 16
const headerBytes = 8

export interface TraceFilter {
  readonly probes: number
  readonly size: number
  readonly bits: Uint8Array
}

/** A trace id's hash (from its 16 bytes), from which the filter's probes are derived. */
export const idHash = (id: Uint8Array): number => HashRing.murmur3(id, 0x7f4a7c15)

/** Probe `i` of a hash: double hashing, the second hash mixed from the first. */
const probe = (hash: number, second: number, i: number, size: number): number =>
  ((hash + Math.imul(i, second)) >>> 0) % size

/** A filter of the ids whose hashes are given (duplicates allowed), encoded as stored. */
export const build = (hashes: ArrayLike<number>, count = hashes.length): Uint8Array => {
  const size = Math.max(64, Math.ceil((count * bitsPerId) / 8) * 8)
  const encoded = new Uint8Array(headerBytes + size / 8)
  encoded[0] = version
  encoded[1] = probes
  new DataView(encoded.buffer).setUint32(4, size)
  const bits = encoded.subarray(headerBytes)
  for (let n = 0; n < count; n++) {
    const hash = hashes[n] as number
    const second = HashRing.fmix32(hash) | 1
    for (let i = 0; i < probes; i++) {
      const at = probe(hash, second, i, size)
      bits[at >>> 3] = (bits[at >>> 3] as number) | (1 << (at & 7))
    }
  }
  return encoded
}

/** A stored filter; undefined when the bytes are not one (then the epoch is read, not skipped). */
export const decode = (encoded: Uint8Array): TraceFilter | undefined => {
  if (encoded.length < headerBytes || encoded[0] !== version) return undefined
  const k = encoded[1] as number
  const size = new DataView(encoded.buffer, encoded.byteOffset, headerBytes).getUint32(4)
  if (k < 1 || k > 32 || size === 0 || size % 8 !== 0 || encoded.length !== headerBytes + size / 8)
    return undefined
  // A copy: lmdb may reuse the buffer a read returned.
  return { probes: k, size, bits: encoded.slice(headerBytes) }
}

/** False when the epoch holds no entry of the id; true when it may. */
export const mayHold = (filter: TraceFilter, hash: number): boolean => {
  const second = HashRing.fmix32(hash) | 1
  for (let i = 0; i < filter.probes; i++) {
    const at = probe(hash, second, i, filter.size)
    if (((filter.bits[at >>> 3] as number) & (1 << (at & 7))) === 0) return false
  }
  return true
}
