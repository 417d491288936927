import { appendFileSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import {
  Follower,
  type JoinedLine,
  Joiner,
  type Position,
  parseLine,
  parseTime
} from "../src/internal/CriLogs.js"

const dirs: Array<string> = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

const logDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "iii-cri-"))
  dirs.push(dir)
  return dir
}

let second = 0
/** A CRI record as the runtime writes it. */
const cri = (content: string, tag = "F", stream = "stdout") =>
  `2026-12-02T10:00:${String(second++ % 60).padStart(2, "0")}.123456789Z ${stream} ${tag} ${content}\n`

const follow = (dir: string, resume?: Position) => {
  const seen: Array<string> = []
  const follower = new Follower(dir, (line: JoinedLine) => seen.push(line.content), resume)
  return { follower, seen }
}

describe("CRI log lines", () => {
  it("parses time (to the nanosecond), stream, partial flag and content", () => {
    expect(parseLine("2026-12-02T10:11:12.123456789Z stderr F boom: it failed")).toEqual({
      timeUnixNano: 1_796_206_272_123_456_789n,
      stream: "stderr",
      partial: false,
      content: "boom: it failed"
    })
    expect(parseLine("2026-12-02T10:11:12Z stdout P ")?.partial).toBe(true)
    expect(parseTime("2026-12-02T12:11:12.5+02:00")).toBe(1_796_206_272_500_000_000n)
    for (const bad of ["", "hello", "2026-12-02T10:11:12Z stdin F x", "yesterday stdout F x"])
      expect(parseLine(bad)).toBeUndefined()
  })

  it("joins partial lines per stream, with the first piece's time, and cuts what is too long", () => {
    const joiner = new Joiner()
    const line = (content: string, partial: boolean, stream: "stdout" | "stderr" = "stdout", t = 1n) =>
      joiner.push({ timeUnixNano: t, stream, partial, content })
    expect(line("hel", true, "stdout", 5n)).toBeUndefined()
    expect(line("other", false, "stderr")).toMatchObject({ content: "other", stream: "stderr" })
    expect(joiner.holding).toBe(true)
    expect(line("lo", false, "stdout", 9n)).toEqual({
      timeUnixNano: 5n,
      stream: "stdout",
      content: "hello",
      cut: false
    })
    expect(joiner.holding).toBe(false)
    line("x".repeat(16 * 1024), true)
    expect(line("y".repeat(100), false)).toMatchObject({ cut: true })
  })
})

describe("Follower", () => {
  it("reads whole lines as they are written, holding a line until its newline", () => {
    const dir = logDir()
    const two = cri("two")
    writeFileSync(join(dir, "0.log"), cri("one") + two.slice(0, 20))
    const { follower, seen } = follow(dir)
    follower.poll()
    expect(seen).toEqual(["one"])
    appendFileSync(join(dir, "0.log"), two.slice(20) + cri("three"))
    follower.poll()
    expect(seen).toEqual(["one", "two", "three"])
  })

  it("follows rotation: the renamed file is finished, then the new one read from its start", () => {
    const dir = logDir()
    writeFileSync(join(dir, "0.log"), cri("a"))
    const { follower, seen } = follow(dir)
    follower.poll()
    appendFileSync(join(dir, "0.log"), cri("b"))
    renameSync(join(dir, "0.log"), join(dir, "0.log.20261202-100000"))
    writeFileSync(join(dir, "0.log"), cri("c"))
    follower.poll()
    expect(seen).toEqual(["a", "b", "c"])
  })

  it("moves on to a restarted container's next file after finishing the previous one", () => {
    const dir = logDir()
    writeFileSync(join(dir, "0.log"), cri("first life"))
    const { follower, seen } = follow(dir)
    follower.poll()
    appendFileSync(join(dir, "0.log"), cri("last words"))
    writeFileSync(join(dir, "1.log"), cri("second life"))
    follower.poll()
    follower.poll()
    expect(seen).toEqual(["first life", "last words", "second life"])
  })

  it("resumes at a saved position, even in a file rotated meanwhile: no line lost, none repeated", () => {
    const dir = logDir()
    writeFileSync(join(dir, "0.log"), cri("1") + cri("2") + cri("part", "P"))
    const first = follow(dir)
    first.follower.poll()
    const saved = first.follower.position
    first.follower.close()
    expect(first.seen).toEqual(["1", "2"])
    // While no agent runs: the partial line ends, more lines, rotation, a new file.
    appendFileSync(join(dir, "0.log"), cri("ial", "F") + cri("3"))
    renameSync(join(dir, "0.log"), join(dir, "0.log.20261202-100000"))
    writeFileSync(join(dir, "0.log"), cri("4"))
    const second = follow(dir, saved)
    second.follower.poll()
    expect(second.seen).toEqual(["partial", "3", "4"])
  })

  it("counts records that are not CRI lines and goes on", () => {
    const dir = logDir()
    writeFileSync(join(dir, "0.log"), `garbage\n${cri("fine")}`)
    const { follower, seen } = follow(dir)
    follower.poll()
    expect({ seen, malformed: follower.malformed }).toEqual({ seen: ["fine"], malformed: 1 })
  })
})
