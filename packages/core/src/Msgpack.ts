/**
 * iii's one MessagePack writer, appending straight into one growable buffer: the wire codec encodes
 * frames with it (`WireProtocol`), and obs encodes every span record and index value of a batch with
 * it, without a tuple array per value or a call into a general encoder per value. It writes only what
 * those values hold: nil, booleans, safe integers, doubles, bigints (as 64-bit integers), strings,
 * array, map and bin headers, and raw bytes. Integers beyond 32 bits are written as doubles, as
 * msgpackr does, so they decode as numbers again. Reading is msgpackr's.
 */
export class Writer {
  bytes: Buffer
  position = 0
  // Node's writeBigUInt64BE does BigInt arithmetic; V8 compiles DataView's setBigUint64 inline.
  private view: DataView

  constructor(initialBytes: number) {
    this.bytes = Buffer.allocUnsafeSlow(Math.max(4096, initialBytes))
    this.view = new DataView(this.bytes.buffer)
  }

  /** Makes room for `bytes` more bytes. */
  room(bytes: number): void {
    if (this.position + bytes <= this.bytes.length) return
    // A multiple of 8: ordered-binary views the buffer through a DataView rounded up to 4 bytes.
    const bigger = Buffer.allocUnsafeSlow(Math.max(this.bytes.length * 2, (this.position + bytes + 7) & ~7))
    this.bytes.copy(bigger, 0, 0, this.position)
    this.bytes = bigger
    this.view = new DataView(bigger.buffer)
  }

  nil(): void {
    this.room(1)
    this.bytes[this.position++] = 0xc0
  }

  boolean(value: boolean): void {
    this.room(1)
    this.bytes[this.position++] = value ? 0xc3 : 0xc2
  }

  arrayHeader(length: number): void {
    this.header(length, 0x90, 0xdc)
  }

  mapHeader(length: number): void {
    this.header(length, 0x80, 0xde)
  }

  binHeader(length: number): void {
    this.room(5)
    const b = this.bytes
    if (length <= 0xff) {
      b[this.position] = 0xc4
      b[this.position + 1] = length
      this.position += 2
    } else if (length <= 0xffff) {
      b[this.position] = 0xc5
      b.writeUInt16BE(length, this.position + 1)
      this.position += 3
    } else {
      b[this.position] = 0xc6
      b.writeUInt32BE(length, this.position + 1)
      this.position += 5
    }
  }

  private header(length: number, fix: number, wide16: number): void {
    this.room(5)
    const b = this.bytes
    if (length < 16) b[this.position++] = fix | length
    else if (length <= 0xffff) {
      b[this.position] = wide16
      b.writeUInt16BE(length, this.position + 1)
      this.position += 3
    } else {
      b[this.position] = wide16 + 1
      b.writeUInt32BE(length, this.position + 1)
      this.position += 5
    }
  }

  number(value: number): void {
    this.room(9)
    const b = this.bytes
    let p = this.position
    if (Number.isInteger(value) && value >= -0x80000000 && value <= 0xffffffff) {
      if (value >= 0) {
        if (value < 0x80) b[p++] = value
        else if (value <= 0xff) {
          b[p++] = 0xcc
          b[p++] = value
        } else if (value <= 0xffff) {
          b[p++] = 0xcd
          b.writeUInt16BE(value, p)
          p += 2
        } else {
          b[p++] = 0xce
          b.writeUInt32BE(value, p)
          p += 4
        }
      } else if (value >= -32) b[p++] = value & 0xff
      else {
        b[p++] = 0xd2
        b.writeInt32BE(value, p)
        p += 4
      }
    } else {
      b[p++] = 0xcb
      b.writeDoubleBE(value, p)
      p += 8
    }
    this.position = p
  }

  /** A 64-bit integer: signed (int64) while it fits, as msgpackr writes it, unsigned above. */
  bigint(value: bigint): void {
    this.room(9)
    const signed = value < 0x8000000000000000n
    this.bytes[this.position] = signed ? 0xd3 : 0xcf
    if (signed) this.view.setBigInt64(this.position + 1, value)
    else this.view.setBigUint64(this.position + 1, value)
    this.position += 9
  }

  string(value: string): void {
    const length = value.length
    // UTF-8 takes at most 3 bytes per UTF-16 unit: room and header are sized for that bound.
    const bound = length * 3
    const headerBytes = bound < 32 ? 1 : bound <= 0xff ? 2 : bound <= 0xffff ? 3 : 5
    this.room(headerBytes + bound)
    const b = this.bytes
    const at = this.position
    // Short ASCII strings (names, routes, labels) are copied here, under the fixstr header their
    // length fits: a call into Node costs more. Anything else is written again below.
    if (length <= 24) {
      let p = at + 1
      let i = 0
      for (; i < length; i++) {
        const c = value.charCodeAt(i)
        if (c >= 0x80) break
        b[p++] = c
      }
      if (i === length) {
        b[at] = 0xa0 | length
        this.position = p
        return
      }
    }
    const start = at + headerBytes
    const written = b.write(value, start)
    if (headerBytes === 1) b[at] = 0xa0 | written
    else if (headerBytes === 2) {
      b[at] = 0xd9
      b[at + 1] = written
    } else if (headerBytes === 3) {
      b[at] = 0xda
      b.writeUInt16BE(written, at + 1)
    } else {
      b[at] = 0xdb
      b.writeUInt32BE(written, at + 1)
    }
    this.position = start + written
  }

  /** A string, nil when undefined. */
  optionalString(value: string | undefined): void {
    if (value === undefined) this.nil()
    else this.string(value)
  }

  /** A number, nil when undefined. */
  optionalNumber(value: number | undefined): void {
    if (value === undefined) this.nil()
    else this.number(value)
  }

  /** A string, number or boolean (an attribute value). */
  scalar(value: string | number | boolean): void {
    if (typeof value === "string") this.string(value)
    else if (typeof value === "number") this.number(value)
    else this.boolean(value)
  }

  /** A map of string keys to scalars (attributes), nil when undefined. */
  optionalScalarMap(map: Readonly<Record<string, string | number | boolean>> | undefined): void {
    if (map === undefined) {
      this.nil()
      return
    }
    const keys = Object.keys(map)
    this.mapHeader(keys.length)
    for (const key of keys) {
      this.string(key)
      this.scalar(map[key] as string | number | boolean)
    }
  }

  /** Bytes as they are: MessagePack written elsewhere, or the content after a `binHeader`. */
  raw(bytes: Uint8Array): void {
    this.room(bytes.length)
    this.bytes.set(bytes, this.position)
    this.position += bytes.length
  }

  /** `hex` as raw bytes; false, with nothing written, unless it is exactly `bytes` bytes of hex. */
  hex(hex: string, bytes: number): boolean {
    if (hex.length !== bytes * 2) return false
    this.room(bytes)
    if (this.bytes.write(hex, this.position, bytes, "hex") !== bytes) return false
    this.position += bytes
    return true
  }

  /** What was written since the last `clear`: a view of the buffer, valid until the next write. */
  written(): Uint8Array {
    return this.bytes.subarray(0, this.position)
  }

  /** Starts again at the beginning, keeping the buffer. */
  clear(): void {
    this.position = 0
  }
}
