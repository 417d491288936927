/**
 * How the capture fails, for real: a program the verifier refuses, a process without the
 * capabilities, tracefs unmounted (in a private mount namespace), an addon that is not built, a
 * build machine without the toolchain.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { afterAll, afterEach, describe, expect, it, vi } from "vitest"
import * as EbpfCapture from "../src/EbpfCapture.js"
import * as CgroupTree from "../src/internal/CgroupTree.js"
import * as NativeAddon from "../src/internal/NativeAddon.js"

const root = fileURLToPath(new URL("../../..", import.meta.url))
const availability = Effect.runSync(EbpfCapture.isAvailable)
const canRun = availability.available
const vmlinux = join(root, "bpf/build/vmlinux.h")
const hasClang = spawnSync("clang", ["--version"]).status === 0 && existsSync(vmlinux)
if (!canRun) console.warn(`EbpfCapture error tests needing eBPF skipped: ${availability.reasons.join("; ")}`)
if (canRun && !hasClang) console.warn("verifier test skipped: clang or bpf/build/vmlinux.h missing")
const hasSetpriv = spawnSync("setpriv", ["--version"]).status === 0
const hasUnshare = spawnSync("unshare", ["--version"]).status === 0
const cgroupRoot = CgroupTree.findCgroup2Mount()
if (canRun && cgroupRoot === undefined) console.warn("capability test skipped: no cgroup v2 mount")

describe("EbpfCapture failures", () => {
  const work = mkdtempSync(join(tmpdir(), "iii-ebpf-errors-"))
  afterAll(() => rmSync(work, { recursive: true, force: true }))

  it.skipIf(!canRun || !hasClang)(
    "reports a verifier rejection with the program's name and the verifier log",
    async () => {
      const object = join(work, "verifier-reject.bpf.o")
      const compiled = spawnSync(
        "clang",
        [
          "-O2",
          "-g",
          "-target",
          "bpf",
          "-D__TARGET_ARCH_x86",
          "-I",
          join(root, "bpf/build"),
          "-I",
          join(root, "bpf")
        ].concat([
          "-c",
          fileURLToPath(new URL("./fixtures/verifier-reject.bpf.c", import.meta.url)),
          "-o",
          object
        ]),
        { encoding: "utf8" }
      )
      expect(compiled.status, compiled.stderr).toBe(0)
      const error = await Effect.runPromise(
        Effect.flip(Effect.scoped(EbpfCapture.start({ objectPath: object })))
      )
      expect(error._tag).toBe("VerifierRejected")
      if (error._tag !== "VerifierRejected") return
      expect(error.program).toBe("iii_exit_getppid")
      expect(error.message).toMatch(/rejected by the verifier/)
      // The kernel's own words about the bad access.
      expect(error.log).toMatch(/invalid access to map value/)
    }
  )

  it.skipIf(!canRun || !hasSetpriv)("names the missing capabilities when the process has none", () => {
    const loaded = NativeAddon.load()
    if (loaded._tag === "Missing") throw new Error(loaded.reason)
    const script = `
      const addon = require(${JSON.stringify(loaded.path)})
      let message = "started"
      try { addon.Capture.start({}, [Buffer.alloc(1 << 20)], () => {}).close() } catch (error) { message = error.message }
      console.log(JSON.stringify({ message, missing: addon.diagnose().missingCapabilities }))`
    // Same user, but an empty capability bounding set: the process runs with no capabilities.
    const run = spawnSync(
      "setpriv",
      ["--bounding-set=-all", "--inh-caps=-all", process.execPath, "-e", script],
      {
        encoding: "utf8"
      }
    )
    expect(run.status, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout) as { message: string; missing: Array<string> }
    expect(result.missing).toEqual(["CAP_BPF", "CAP_PERFMON"])
    expect(result.message).toMatch(/^permission: missing CAP_BPF and CAP_PERFMON/)
  })

  it.skipIf(!canRun || !hasSetpriv || cgroupRoot === undefined)(
    "captures with CAP_BPF + CAP_PERFMON alone (a node agent's grant); propagation asks for CAP_NET_ADMIN",
    () => {
      const loaded = NativeAddon.load()
      if (loaded._tag === "Missing") throw new Error(loaded.reason)
      // What the node agent's DaemonSet grants, and a node agent's settings (no tracefs needed).
      const script = `
      const addon = require(${JSON.stringify(loaded.path)})
      const attempt = (options) => {
        try { addon.Capture.start(options, [Buffer.alloc(1 << 20)], () => {}).close(); return "started" } catch (error) { return error.message }
      }
      const node = { pidTargets: false, stdio: "off", cgroups: [${JSON.stringify(cgroupRoot)}] }
      console.log(JSON.stringify({
        capture: attempt(node),
        propagation: attempt({ ...node, propagation: true }),
        missing: addon.diagnose(true).missingCapabilities
      }))`
      const run = spawnSync(
        "setpriv",
        ["--bounding-set=-all,+bpf,+perfmon", "--inh-caps=-all", process.execPath, "-e", script],
        { encoding: "utf8" }
      )
      expect(run.status, run.stderr).toBe(0)
      const result = JSON.parse(run.stdout) as {
        capture: string
        propagation: string
        missing: Array<string>
      }
      expect(result.capture).toBe("started")
      expect(result.missing).toEqual(["CAP_NET_ADMIN"])
      expect(result.propagation).toMatch(
        /^permission: missing CAP_NET_ADMIN: .*for trace propagation, CAP_NET_ADMIN/
      )
    }
  )

  it.skipIf(!canRun || !hasUnshare)("says tracefs is not mounted, or mounts it when allowed", () => {
    const loaded = NativeAddon.load()
    if (loaded._tag === "Missing") throw new Error(loaded.reason)
    const script = `
      const addon = require(${JSON.stringify(loaded.path)})
      const attempt = (options) => {
        try { addon.Capture.start(options, [Buffer.alloc(1 << 20)], () => {}).close(); return "started" } catch (error) { return error.message }
      }
      const refused = attempt({ mountTracefs: false })
      console.log(JSON.stringify({ refused, mounted: attempt({}) }))`
    // A private mount namespace: tracefs disappears for this child only. Where debugfs is mounted,
    // tracefs is also reachable under it (/sys/kernel/debug/tracing, mounted again on access after a
    // plain umount): debugfs goes too, with everything below it. It is mounted first so that this
    // case is exercised on every machine, debugfs mounted on the host or not.
    const run = spawnSync(
      "unshare",
      [
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t debugfs none /sys/kernel/debug 2>/dev/null; umount /sys/kernel/tracing 2>/dev/null; " +
          'umount -R -l /sys/kernel/debug 2>/dev/null; exec "$0" -e "$1"'
      ].concat([process.execPath, script]),
      { encoding: "utf8" }
    )
    expect(run.status, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout) as { refused: string; mounted: string }
    expect(result.refused).toBe(
      "tracefs: tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"
    )
    expect(result.mounted).toBe("started")
  })

  describe("without the addon", () => {
    const saved = process.env.III_NATIVE_ADDON
    afterEach(() => {
      if (saved === undefined) delete process.env.III_NATIVE_ADDON
      else process.env.III_NATIVE_ADDON = saved
    })

    it("says what to build instead of failing obscurely", async () => {
      // A fresh module instance so the cached load result does not leak between tests.
      process.env.III_NATIVE_ADDON = join(work, "missing.node")
      vi.resetModules()
      const fresh = await import("../src/internal/NativeAddon.js")
      const result = fresh.load()
      expect(result._tag).toBe("Missing")
      if (result._tag === "Missing") expect(result.reason).toMatch(/npm run build:native/)
    })
  })

  it("build-native.sh skips with a reason and exit 0 when the toolchain is missing", () => {
    const addon = join(root, "native/iii_native.node")
    const before = existsSync(addon) ? statSync(addon).mtimeMs : undefined
    // A PATH with the basic tools but neither clang, bpftool nor cargo.
    const run = spawnSync("bash", [join(root, "scripts/build-native.sh")], {
      encoding: "utf8",
      env: { PATH: "/usr/bin:/bin", HOME: tmpdir() },
      cwd: root
    })
    expect(run.status).toBe(0)
    expect(run.stderr).toMatch(/build-native: skipped: \w+ not found/)
    expect(existsSync(addon) ? statSync(addon).mtimeMs : undefined).toBe(before)
  })
})
