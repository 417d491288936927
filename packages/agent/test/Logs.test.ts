import { describe, expect, it } from "vitest"
import { atLeast, LineSplitter, maxLineBytes, parseLine } from "../src/internal/Logs.js"

const bytes = (s: string) => Buffer.from(s)

describe("Logs", () => {
  it.each([
    ['{"level":30,"time":1,"msg":"hi"}', "info"],
    ['{"level":50,"msg":"boom"}', "error"],
    ['{"level":60}', "fatal"],
    ['{"level":10}', "trace"],
    ['{"level":"warn","message":"x"}', "warn"],
    ['{"severity":"WARNING"}', "warn"],
    ['{"log.level":"debug"}', "debug"],
    ['{"levelname":"CRITICAL"}', "fatal"],
    ["[ERROR] database down", "error"],
    ["2025-01-01T00:00:00Z WARN slow query", "warn"],
    ["INFO: started", "info"],
    ["time=1 level=debug msg=x", "debug"],
    ["error: cannot connect", "error"],
    ["plain line", "info"]
  ])("%s → %s", (line, level) => {
    expect(parseLine(line, "stdout").level).toBe(level)
  })

  it("defaults stderr lines without a level to error", () => {
    expect(parseLine("Traceback (most recent call last):", "stderr").level).toBe("error")
    expect(parseLine("[INFO] fine", "stderr").level).toBe("info")
  })

  it("finds trace and correlation ids in JSON and text", () => {
    const json = parseLine(
      '{"level":"info","trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","correlationId":"order-7"}',
      "stdout"
    )
    expect(json).toMatchObject({
      traceId: "0af7651916cd43dd8448eb211c80319c",
      spanId: "b7ad6b7169203331",
      correlationId: "order-7"
    })
    const text = parseLine(
      "INFO handled traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "stdout"
    )
    expect(text).toMatchObject({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" })
    expect(parseLine("WARN retry correlation_id=abc-123 attempt=2", "stdout").correlationId).toBe("abc-123")
    expect(parseLine('{"level":"info","traceId":"not-hex"}', "stdout").traceId).toBeUndefined()
  })

  it("filters by minimum level", () => {
    expect(atLeast("warn", "info")).toBe(true)
    expect(atLeast("debug", "info")).toBe(false)
  })

  it("splits lines across writes and cuts oversized lines", () => {
    const splitter = new LineSplitter()
    expect(splitter.push(bytes("first li"), 0)).toEqual([])
    expect(splitter.push(bytes("ne\r\nsecond\nthi"), 0)).toEqual([
      { line: "first line", cut: false },
      { line: "second", cut: false }
    ])
    expect(splitter.flush()).toBe("thi")
    const long = splitter.push(bytes("x".repeat(maxLineBytes + 10)), 0)
    expect(long).toEqual([{ line: "x".repeat(maxLineBytes), cut: true }])
    expect(splitter.push(bytes("rest of it\nnext\n"), 0)).toEqual([{ line: "next", cut: false }])
  })

  it("marks a line whose write was only partly captured as cut", () => {
    const splitter = new LineSplitter()
    expect(splitter.push(bytes("a\nbeginning of a huge line"), 100_000)).toEqual([
      { line: "a", cut: false },
      { line: "beginning of a huge line", cut: true }
    ])
    expect(splitter.push(bytes("tail\nafter\n"), 0)).toEqual([{ line: "after", cut: false }])
  })
})
