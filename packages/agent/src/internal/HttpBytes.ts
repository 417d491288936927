/** Byte-level helpers for HttpParser: constants, header name/value reading, known methods. */

/** Known request methods: a request line must start with one (avoids false positives on binary protocols). */
export const methods = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "CONNECT",
  "OPTIONS",
  "TRACE",
  "PATCH",
  "PROPFIND",
  "PROPPATCH",
  "MKCOL",
  "COPY",
  "MOVE",
  "LOCK",
  "UNLOCK",
  "SEARCH",
  "REPORT",
  "PURGE"
])
export const longestMethod = 9
const methodList = [...methods]

/** Bytes [at, at + text.length) of `buf` are `text`'s characters (ASCII). */
export const bytesAre = (buf: Uint8Array, at: number, text: string): boolean => {
  if (at + text.length > buf.length) return false
  for (let i = 0; i < text.length; i++) if (buf[at + i] !== text.charCodeAt(i)) return false
  return true
}

/**
 * The known method that bytes [from, to) spell, as the one shared string (its hash kept by V8 for
 * every later lookup), or undefined. Compared in JavaScript: `toString` then `Set.has` crossed into
 * C++ and made a new string for every request head.
 */
export const methodAt = (buf: Uint8Array, from: number, to: number): string | undefined => {
  for (const method of methodList)
    if (method.length === to - from && bytesAre(buf, from, method)) return method
  return undefined
}

export const CR = 13
export const LF = 10
export const SP = 32
export const TAB = 9
export const COLON = 58
export const ZERO = 48
export const crlfcrlf = Buffer.from("\r\n\r\n")
export const lastChunk = Buffer.from("0\r\n\r\n")
export const httpPrefixText = "HTTP/1."

/** The bytes begin a request line: a known method and its space. */
export const startsRequest = (buf: Uint8Array): boolean => {
  const limit = Math.min(buf.length, longestMethod + 1)
  for (let i = 0; i < limit; i++) if (buf[i] === SP) return i > 2 && methodAt(buf, 0, i) !== undefined
  return false
}

/** The bytes begin a status line. */
export const startsResponse = (buf: Uint8Array): boolean =>
  buf.length >= 8 && bytesAre(buf, 0, httpPrefixText)

/** Could bytes [start, end) begin a request line (capital letters, then a known method's space)? */
export const mayStartRequest = (buf: Uint8Array, start: number, end: number): boolean => {
  const limit = Math.min(end, start + longestMethod + 1)
  for (let i = start; i < limit; i++) {
    const byte = buf[i] ?? 0
    if (byte === SP) return i > start && methodAt(buf, start, i) !== undefined
    if (byte < 65 || byte > 90) return false
  }
  return end - start <= longestMethod
}

/** Could bytes [start, end) begin a status line? */
export const mayStartResponse = (buf: Uint8Array, start: number, end: number): boolean => {
  const n = Math.min(end - start, httpPrefixText.length)
  for (let i = 0; i < n; i++) if (buf[start + i] !== httpPrefixText.charCodeAt(i)) return false
  return true
}

/** The header name at `pos` equals `lowerName`, ASCII case-insensitively. */
export const nameIs = (buf: Buffer, pos: number, lowerName: string): boolean => {
  for (let i = 0; i < lowerName.length; i++) {
    const c = buf[pos + i] ?? 0
    if ((c >= 65 && c <= 90 ? c + 32 : c) !== lowerName.charCodeAt(i)) return false
  }
  return true
}

export const isOws = (c: number | undefined) => c === SP || c === TAB

/** A header value without surrounding whitespace, as its own string. */
export const valueAt = (buf: Buffer, from: number, to: number): string => {
  while (from < to && isOws(buf[from])) from++
  while (to > from && isOws(buf[to - 1])) to--
  return buf.toString("latin1", from, to)
}

/** Content-Length digits (1 to 15, surrounded by optional whitespace), or -1. */
export const contentLengthAt = (buf: Buffer, from: number, to: number): number => {
  while (from < to && isOws(buf[from])) from++
  while (to > from && isOws(buf[to - 1])) to--
  if (to - from < 1 || to - from > 15) return -1
  let value = 0
  for (let i = from; i < to; i++) {
    const digit = (buf[i] ?? 0) - ZERO
    if (digit < 0 || digit > 9) return -1
    value = value * 10 + digit
  }
  return value
}

export const digitsAt = (buf: Buffer, from: number, count: number): number => {
  let value = 0
  for (let i = from; i < from + count; i++) {
    const digit = (buf[i] ?? 0) - ZERO
    if (digit < 0 || digit > 9) return -1
    value = value * 10 + digit
  }
  return value
}

export const endsWith = (buf: Buffer, suffix: Buffer): boolean =>
  buf.compare(suffix, 0, suffix.length, buf.length - suffix.length, buf.length) === 0
