import { pack, Unpackr } from "msgpackr"
import { describe, expect, it } from "vitest"
import { Writer } from "../src/Msgpack.js"

// As the read paths decode stored values.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "bigint" })

const roundTrip = (write: (w: Writer) => void): unknown => {
  const w = new Writer(0)
  write(w)
  return unpackr.unpack(w.bytes.subarray(0, w.position))
}

describe("Msgpack.Writer", () => {
  it("writes numbers that decode to the same numbers, integers past 32 bits included", () => {
    const numbers = [
      0,
      1,
      127,
      128,
      255,
      256,
      65_535,
      65_536,
      0xffffffff,
      0x100000000,
      Number.MAX_SAFE_INTEGER,
      -1,
      -32,
      -33,
      -129,
      -0x80000000,
      -0x80000001,
      0.5,
      -2.25,
      1e300
    ]
    for (const n of numbers) expect(roundTrip((w) => w.number(n))).toBe(n)
  })

  it("writes bigints as 64-bit integers, signed while they fit, as msgpackr does", () => {
    for (const n of [
      0n,
      1_764_158_400_000_000_000n,
      2n ** 63n - 1n,
      2n ** 63n,
      2n ** 64n - 1n,
      -(2n ** 63n)
    ]) {
      expect(roundTrip((w) => w.bigint(n))).toBe(n)
      const w = new Writer(0)
      w.bigint(n)
      expect(Buffer.from(w.written())).toEqual(pack(n))
    }
  })

  it("writes strings of every header size, ASCII or not, short or long", () => {
    const strings = [
      "",
      "a".repeat(10),
      "a".repeat(11),
      "a".repeat(63),
      "a".repeat(64),
      "a".repeat(86),
      "a".repeat(30_000),
      "käse-☃-服务-😀",
      `x${"ß".repeat(100)}`,
      "☃".repeat(30_000)
    ]
    for (const s of strings) expect(roundTrip((w) => w.string(s))).toBe(s)
  })

  it("writes short ASCII strings under a fixstr header, as msgpackr does", () => {
    for (const s of ["", "GET", "a".repeat(24)]) {
      const w = new Writer(0)
      w.string(s)
      expect(Buffer.from(w.written())).toEqual(pack(s))
    }
  })

  it("writes arrays and maps of every header size, growing its buffer as it goes", () => {
    for (const length of [0, 15, 16, 65_535, 65_536]) {
      const array = Array.from({ length }, (_, i) => i)
      expect(
        roundTrip((w) => {
          w.arrayHeader(length)
          for (const n of array) w.number(n)
        })
      ).toEqual(array)
    }
    const map = Object.fromEntries(
      Array.from({ length: 20 }, (_, i) => [`k${i}`, i % 3 === 0 ? `v${i}` : i % 3 === 1 ? i : true])
    )
    expect(
      roundTrip((w) => {
        w.mapHeader(20)
        for (const [k, v] of Object.entries(map)) {
          w.string(k)
          w.scalar(v)
        }
      })
    ).toEqual(map)
  })

  it("writes nil, booleans and optional values", () => {
    expect(
      roundTrip((w) => {
        w.arrayHeader(6)
        w.nil()
        w.boolean(true)
        w.boolean(false)
        w.optionalString(undefined)
        w.optionalNumber(7)
        w.optionalString("s")
      })
    ).toEqual([null, true, false, null, 7, "s"])
  })

  it("writes scalar maps (attributes), nil when absent", () => {
    const attributes = { "http.route": "/a", "iii.retries": 2, cached: false }
    expect(roundTrip((w) => w.optionalScalarMap(attributes))).toEqual(attributes)
    expect(roundTrip((w) => w.optionalScalarMap(undefined))).toBe(null)
  })

  it("writes bin headers of every size before raw bytes", () => {
    for (const length of [0, 255, 256, 65_535, 65_536]) {
      const bytes = Buffer.alloc(length, 7)
      const decoded = roundTrip((w) => {
        w.binHeader(length)
        w.raw(bytes)
      })
      expect(Buffer.from(decoded as Uint8Array)).toEqual(bytes)
    }
  })

  it("writes hex as bytes, and nothing at all when it is not exactly that many bytes of hex", () => {
    const w = new Writer(0)
    expect(w.hex("00f067aa0ba902b7", 8)).toBe(true)
    for (const bad of ["00f067aa0ba902", "00f067aa0ba902b7ff", "00f067aa0ba902bx", "zz"])
      expect(w.hex(bad, 8)).toBe(false)
    expect(Buffer.from(w.written()).toString("hex")).toBe("00f067aa0ba902b7")
    w.clear()
    expect(w.written().length).toBe(0)
  })
})
