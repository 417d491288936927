/**
 * The container logs the kubelet keeps, as the node agent reads them (what Fluent Bit, Vector and the
 * OpenTelemetry filelog receiver do, with no kernel hook on stdout/stderr):
 * `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart count>.log`, one line per record in
 * the CRI format `<RFC 3339 time> <stdout|stderr> <P|F> <content>`: `P` marks a partial line the
 * runtime split (long lines, 16 KiB by default), `F` its end.
 *
 * - `parseLine` / `Joiner`: pure; a line and its partial pieces become one log line per stream.
 * - `Follower`: one container's log directory, read from where it was left (`Position`), following
 *   the kubelet's rotation (`0.log` renamed to `0.log.<timestamp>`, a new `0.log` opened) and a
 *   restarted container's next file (`1.log`). A position points just past the last whole line
 *   handed over, so saving it after obs acknowledged those lines means a restarted agent neither
 *   loses nor repeats one.
 */
import { closeSync, fstatSync, openSync, readdirSync, readSync, statSync } from "node:fs"
import { join } from "node:path"
import { maxLineBytes } from "./Logs.js"

export interface CriLine {
  readonly timeUnixNano: bigint
  readonly stream: "stdout" | "stderr"
  /** `P`: the runtime split this line; more of it follows. */
  readonly partial: boolean
  readonly content: string
}

/** RFC 3339 with up to nanoseconds (`2026-12-02T10:11:12.123456789Z`, or a `+hh:mm` offset). */
export const parseTime = (text: string): bigint | undefined => {
  const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(text)
  if (match === null) return undefined
  const seconds = Date.parse(`${match[1]}${match[3]}`)
  if (Number.isNaN(seconds)) return undefined
  const fraction = (match[2] ?? "").padEnd(9, "0")
  return BigInt(seconds) * 1_000_000n + BigInt(fraction)
}

/** One line of a CRI log file (without its newline), or undefined when it is not one. */
export const parseLine = (line: string): CriLine | undefined => {
  const first = line.indexOf(" ")
  const second = first < 0 ? -1 : line.indexOf(" ", first + 1)
  if (second < 0) return undefined
  const third = line.indexOf(" ", second + 1)
  const stream = line.slice(first + 1, second)
  const tags = third < 0 ? line.slice(second + 1) : line.slice(second + 1, third)
  const timeUnixNano = parseTime(line.slice(0, first))
  if (timeUnixNano === undefined || (stream !== "stdout" && stream !== "stderr")) return undefined
  return {
    timeUnixNano,
    stream,
    partial: tags.split(":").includes("P"),
    content: third < 0 ? "" : line.slice(third + 1)
  }
}

/** A log line put back together: its first piece's time, `cut` when longer than `maxLineBytes`. */
export interface JoinedLine {
  readonly timeUnixNano: bigint
  readonly stream: "stdout" | "stderr"
  readonly content: string
  readonly cut: boolean
}

/** Joins partial lines (per stream: the runtime interleaves stdout and stderr records). */
export class Joiner {
  private readonly pending: Record<
    "stdout" | "stderr",
    { time: bigint; parts: Array<string>; bytes: number; cut: boolean } | undefined
  > = { stdout: undefined, stderr: undefined }

  push(line: CriLine): JoinedLine | undefined {
    const held = this.pending[line.stream]
    if (!line.partial && held === undefined)
      return { timeUnixNano: line.timeUnixNano, stream: line.stream, content: line.content, cut: false }
    const joined = held ?? { time: line.timeUnixNano, parts: [], bytes: 0, cut: false }
    if (joined.bytes < maxLineBytes) {
      joined.parts.push(line.content)
      joined.bytes += line.content.length
    } else joined.cut = true
    if (line.partial) {
      this.pending[line.stream] = joined
      return undefined
    }
    this.pending[line.stream] = undefined
    const content = joined.parts.join("")
    const cut = joined.cut || content.length > maxLineBytes
    return {
      timeUnixNano: joined.time,
      stream: line.stream,
      content: cut ? content.slice(0, maxLineBytes) : content,
      cut
    }
  }

  /** Whether a partial line is waiting for its end (the position must not move past its start). */
  get holding(): boolean {
    return this.pending.stdout !== undefined || this.pending.stderr !== undefined
  }
}

/** Where reading stopped in a container's log directory: a file (by name and inode) and an offset. */
export interface Position {
  readonly file: string
  readonly inode: number
  readonly offset: number
}

/** The restart count a `N.log` file is named after. */
const restarts = (name: string): number => Number.parseInt(name, 10)

/** `N.log` files of a directory, highest restart count last. */
export const logFiles = (names: ReadonlyArray<string>): ReadonlyArray<string> =>
  names.filter((name) => /^\d+\.log$/.test(name)).sort((a, b) => restarts(a) - restarts(b))

const listDir = (dir: string): ReadonlyArray<string> => {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

const inodeOf = (path: string): number | undefined => {
  try {
    return statSync(path).ino
  } catch {
    return undefined
  }
}

interface Open {
  readonly file: string
  readonly fd: number
  readonly inode: number
  /** Bytes read from the file so far. */
  read: number
  /** Where the last whole line handed over ends (what a saved position says). */
  committed: number
  /** Bytes of an unfinished line, waiting for its newline. */
  rest: Buffer
}

const chunk = Buffer.allocUnsafe(64 * 1024)

/**
 * One container's log directory. `poll` hands over every whole line written since the last poll;
 * `position` says where to resume. Files are read through an open descriptor, so a file renamed by
 * rotation is finished before the next one is started.
 */
export class Follower {
  private current: Open | undefined
  private readonly joiner = new Joiner()
  /** Records that were not CRI lines (counted, skipped). */
  malformed = 0

  constructor(
    readonly dir: string,
    private readonly onLine: (line: JoinedLine) => void,
    /** Where a previous agent stopped; without one, the directory is read from its first file's start. */
    private resume: Position | undefined
  ) {}

  /** Where a restarted agent should resume: after the last whole line handed over. */
  get position(): Position | undefined {
    const open = this.current
    if (open === undefined) return this.resume
    // A partial line still held is read again on resume (its start is not committed).
    return { file: open.file, inode: open.inode, offset: open.committed }
  }

  /** Reads what is new; returns how many lines were handed over. */
  poll(): number {
    let lines = 0
    for (let guard = 0; guard < 16; guard++) {
      if (this.current === undefined && !this.openNext()) return lines
      const open = this.current
      if (open === undefined) return lines
      lines += this.drain(open)
      // Done with this file once a restarted container's next one exists, or its name now points
      // to a new file (rotated): what was written before that is read, then the next file.
      const next = logFiles(listDir(this.dir)).find((name) => restarts(name) > restarts(open.file))
      const rotated = inodeOf(join(this.dir, open.file)) !== open.inode
      if (next === undefined && !rotated) return lines
      lines += this.drain(open)
      closeSync(open.fd)
      this.current = undefined
      // From the start of the next file (inode -1: whichever file has that name then).
      this.resume = { file: next ?? open.file, inode: -1, offset: 0 }
    }
    return lines
  }

  close(): void {
    if (this.current !== undefined) {
      this.resume = this.position
      closeSync(this.current.fd)
      this.current = undefined
    }
  }

  /** Opens the file to read next: the resumed one (found by inode if it was rotated meanwhile). */
  private openNext(): boolean {
    const names = listDir(this.dir)
    const resume = this.resume
    if (resume !== undefined && resume.inode >= 0) {
      // The file where a previous agent stopped, under its name or the name rotation gave it.
      const name = [resume.file, ...names.filter((n) => n.startsWith(`${resume.file}.`))].find(
        (n) => inodeOf(join(this.dir, n)) === resume.inode
      )
      if (name !== undefined) return this.open(name, resume.offset, resume.file)
    }
    const files = logFiles(names)
    const file =
      resume === undefined ? files[0] : files.find((name) => restarts(name) >= restarts(resume.file))
    return file !== undefined && this.open(file, 0, file)
  }

  private open(name: string, offset: number, file: string): boolean {
    let fd: number
    try {
      fd = openSync(join(this.dir, name), "r")
    } catch {
      return false
    }
    const inode = fstatSync(fd).ino
    this.current = { file, fd, inode, read: offset, committed: offset, rest: Buffer.alloc(0) }
    this.resume = undefined
    return true
  }

  /** Reads `open` to its end, handing over whole lines. */
  private drain(open: Open): number {
    let lines = 0
    for (;;) {
      const n = readSync(open.fd, chunk, 0, chunk.length, open.read)
      if (n <= 0) return lines
      open.read += n
      let bytes =
        open.rest.length > 0 ? Buffer.concat([open.rest, chunk.subarray(0, n)]) : chunk.subarray(0, n)
      let start = 0
      let newline = bytes.indexOf(10, start)
      // Offset in the file of bytes[0].
      const base = open.read - bytes.length
      while (newline >= 0) {
        const line = parseLine(bytes.toString("utf8", start, newline))
        if (line === undefined) this.malformed++
        else {
          const joined = this.joiner.push(line)
          if (joined !== undefined) {
            this.onLine(joined)
            lines++
          }
        }
        start = newline + 1
        if (!this.joiner.holding) open.committed = base + start
        newline = bytes.indexOf(10, start)
      }
      bytes = bytes.subarray(start)
      open.rest = Buffer.from(bytes)
    }
  }
}
