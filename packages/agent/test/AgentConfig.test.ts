import { ConfigProvider, Effect } from "effect"
import { describe, expect, it } from "vitest"
import * as AgentConfig from "../src/AgentConfig.js"

/** Resolves `input` against an environment of `env` only. */
const resolve = (input: AgentConfig.Input, env: Record<string, string> = {}) =>
  Effect.runPromise(
    AgentConfig.resolve(input).pipe(
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))),
      Effect.either
    )
  )

describe("AgentConfig", () => {
  it("configures the node agent from the DaemonSet's environment", async () => {
    const resolved = await resolve(
      { node: true },
      {
        III_OBS_URL: "ws://obs:4320",
        NODE_NAME: "worker-3",
        III_CGROUP_ROOT: "/host/cgroup",
        POD_NAME: "iii-agent-x"
      }
    )
    if (resolved._tag === "Left") throw new Error(resolved.left.message)
    expect(resolved.right.agent).toMatchObject({
      identity: { service: "iii-agent", pod: "iii-agent-x", node: "worker-3" },
      node: { nodeName: "worker-3", cgroupRoot: "/host/cgroup", stateDir: "/var/lib/iii-agent" }
    })
    expect(resolved.right.exporter).toMatchObject({ urls: ["ws://obs:4320"], agent: { node: "worker-3" } })
    expect(resolved.right.nice).toBe(10)
  })

  it("lets flags win over the environment", async () => {
    const resolved = await resolve(
      { node: true, nodeName: "from-flag", obs: ["ws://a:1"], stateDir: "/tmp/s", podLogs: "/tmp/pods" },
      { III_NODE_NAME: "from-env", III_OBS_URL: "ws://b:2", III_POD_LOGS: "/var/log/pods" }
    )
    if (resolved._tag === "Left") throw new Error(resolved.left.message)
    expect(resolved.right.agent.node).toMatchObject({
      nodeName: "from-flag",
      stateDir: "/tmp/s",
      podLogs: "/tmp/pods"
    })
    expect(resolved.right.exporter.urls).toEqual(["ws://a:1"])
  })

  it("turns trace propagation on only when asked (--propagation or $III_PROPAGATION=true)", async () => {
    const base = { obs: ["ws://a:1"], service: "s", cgroups: ["/sys/fs/cgroup/x"] }
    const off = await resolve(base)
    if (off._tag === "Left") throw new Error(off.left.message)
    expect(off.right.agent.propagation).toBeUndefined()
    const fromEnv = await resolve(base, { III_PROPAGATION: "true" })
    if (fromEnv._tag === "Left") throw new Error(fromEnv.left.message)
    expect(fromEnv.right.agent.propagation).toBe(true)
    const flagWins = await resolve({ ...base, propagation: false }, { III_PROPAGATION: "true" })
    if (flagWins._tag === "Left") throw new Error(flagWins.left.message)
    expect(flagWins.right.agent.propagation).toBeUndefined()
    // A command the agent starts gets a cgroup of its own to propagate from (`startsCommand`).
    const command = await resolve({ ...base, cgroups: [], command: ["node", "a.mjs"], propagation: true })
    if (command._tag === "Left") throw new Error(command.left.message)
    expect(command.right.agent).toMatchObject({ propagation: true, startsCommand: true })
    expect(off.right.agent.startsCommand).toBeUndefined()
    const bad = await resolve(base, { III_PROPAGATION: "yes" })
    expect(bad._tag === "Left" && bad.left.message).toBe(
      '$III_PROPAGATION: expected true or false, got "yes"'
    )
  })

  it("says what is missing or wrong", async () => {
    const message = async (input: AgentConfig.Input, env: Record<string, string> = {}) => {
      const resolved = await resolve(input, env)
      return resolved._tag === "Left" ? resolved.left.message : "resolved"
    }
    expect(await message({ node: true, obs: ["ws://a:1"] })).toMatch(/node mode needs the node's name/)
    expect(await message({ node: true, nodeName: "n", obs: ["ws://a:1"], pids: [1] })).toMatch(
      /takes no --pid/
    )
    expect(await message({ service: "s", pids: [1] })).toMatch(/--obs URL is required/)
    expect(await message({ obs: ["ws://a:1"], pids: [1] })).toMatch(/--service NAME is required/)
    expect(await message({ obs: ["ws://a:1"], service: "s" })).toMatch(/nothing to trace/)
    expect(await message({ obs: ["ws://a:1"], service: "s", pids: [1] }, { III_AGENT_NICE: "25" })).toMatch(
      /--nice: expected 0 to 19, got 25/
    )
    expect(
      await message(
        { obs: ["ws://a:1"], service: "s", pids: [1], logLevel: undefined },
        { III_LOG_LEVEL: "loud" }
      )
    ).toMatch(/--log-level: expected one of/)
  })
})
