import { describe, expect, it } from "vitest"
import { chooseMode } from "../src/Agent.js"
import { AgentConfigError, ModeUnavailable } from "../src/Errors.js"

const available = { available: true, reasons: [] }
const unavailable = { available: false, reasons: ["missing CAP_BPF and CAP_PERFMON: run as root"] }

describe("Agent.chooseMode", () => {
  it("prefers eBPF when it can run", () => {
    expect(chooseMode("auto", available, true)).toEqual({ mode: "ebpf", why: "eBPF capture is available" })
  })

  it("falls back to proxy mode, saying why", () => {
    expect(chooseMode("auto", unavailable, true)).toEqual({
      mode: "proxy",
      why: "eBPF is not available (missing CAP_BPF and CAP_PERFMON: run as root)"
    })
  })

  it("fails clearly when neither can run", () => {
    const chosen = chooseMode("auto", unavailable, false)
    expect(chosen).toBeInstanceOf(ModeUnavailable)
    expect((chosen as ModeUnavailable).message).toBe(
      "ebpf mode is not available: missing CAP_BPF and CAP_PERFMON: run as root; to run without eBPF, give --proxy-listen and --proxy-upstream (proxy mode)"
    )
  })

  it("fails a forced mode that cannot run", () => {
    expect(chooseMode("ebpf", unavailable, true)).toBeInstanceOf(ModeUnavailable)
    expect(chooseMode("proxy", available, false)).toBeInstanceOf(AgentConfigError)
    expect(chooseMode("proxy", available, true)).toEqual({ mode: "proxy", why: "forced by --mode proxy" })
  })
})
