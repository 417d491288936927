/**
 * Runs a command under the agent (`iii agent … -- COMMAND ARGS`).
 *
 * - The command starts held: a shell stops itself, the agent traces its pid, resumes it, and the shell
 *   execs the command. Nothing the command does (nor any child it forks) escapes tracing. With trace
 *   propagation the held shell is first moved into the agent's cgroup for it (`Agent.commandCgroup`).
 * - Output (`Agent.commandOutput`): inherited (the kernel sees the writes), or piped (Node's pipes
 *   are socketpairs, which the kernel capture sees through its socket hooks) and echoed, or in proxy
 *   mode piped into the agent, which turns the lines into logs.
 * - proxy mode: the command gets `HTTP_PROXY`/`http_proxy` pointing at the agent's forward proxy and
 *   `NODE_USE_ENV_PROXY=1` (Node.js ≥ 24 honours the variables then), so its outbound calls become
 *   client spans; its stdout/stderr go through the agent (copied to the agent's own) and become logs.
 * - Signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) are forwarded when asked; the exit
 *   status is the command's, or 128 + the signal number when a signal killed it.
 */
import { spawn } from "node:child_process"
import { readFileSync, writeSync } from "node:fs"
import { constants } from "node:os"
import * as Errors from "@iii/core/Errors"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { Agent } from "./Agent.js"
import { CommandError } from "./Errors.js"
import * as CommandCgroup from "./internal/CommandCgroup.js"

export interface Options {
  /** Environment (default: the agent's). */
  readonly env?: NodeJS.ProcessEnv
  /** Take over SIGINT/SIGTERM/… while the command runs and pass them to it. Default false. */
  readonly forwardSignals?: boolean
  /** Copy a piped command's output to the agent's stdout/stderr. Default true. */
  readonly echoOutput?: boolean
  /** Working directory (default: the agent's). */
  readonly cwd?: string
  /**
   * A file descriptor (e.g. a log file opened for appending) that gets the command's stdout and
   * stderr instead of the agent's; stdin is then closed. Logs are captured as without it.
   */
  readonly output?: number
}

export interface Running {
  readonly pid: number
  /** Waits for the exit status. */
  readonly exitCode: Effect.Effect<number>
}

const forwardedSignals: ReadonlyArray<NodeJS.Signals> = [
  "SIGINT",
  "SIGTERM",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2"
]

const processState = (pid: number): string | undefined => {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.charAt(0)
  } catch {
    return undefined
  }
}

/** Starts the command; the scope's close terminates it if it still runs (SIGTERM, then SIGKILL after 5 s). */
export const start = (
  argv: ReadonlyArray<string>,
  options: Options = {}
): Effect.Effect<Running, CommandError, Agent | Scope.Scope> =>
  Effect.gen(function* () {
    const agent = yield* Agent
    const [file, ...rest] = argv
    if (file === undefined) return yield* new CommandError({ message: "no command given" })
    const egress = agent.proxy?.egressListening
    const proxyUrl = egress === undefined ? undefined : `http://${egress.host}:${egress.port}`
    const env = {
      ...(options.env ?? process.env),
      ...(proxyUrl === undefined
        ? {}
        : { HTTP_PROXY: proxyUrl, http_proxy: proxyUrl, NODE_USE_ENV_PROXY: "1" })
    }
    const pipeOutput = agent.commandOutput !== "inherit"
    const parse = agent.commandOutput === "parse"
    const output = options.output
    const stdin = output === undefined ? "inherit" : "ignore"
    const child = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          spawn("/bin/sh", ["-c", 'kill -STOP $$; exec "$0" "$@"', file, ...rest], {
            stdio: pipeOutput
              ? [stdin, "pipe", "pipe"]
              : output === undefined
                ? "inherit"
                : [stdin, output, output],
            env,
            ...(options.cwd === undefined ? {} : { cwd: options.cwd })
          }),
        catch: (error) => new CommandError({ message: `${file}: ${String(error)}` })
      }),
      (child) =>
        Effect.async<void>((resume) => {
          if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
          const killer = setTimeout(() => child.kill("SIGKILL"), 5000)
          child.once("exit", () => {
            clearTimeout(killer)
            resume(Effect.void)
          })
          child.kill("SIGCONT")
          child.kill("SIGTERM")
        })
    )
    const exited = new Promise<number>((resolve) => {
      child.once("exit", (code, signal) => {
        resolve(code ?? 128 + (signal === null ? 0 : (constants.signals[signal] ?? 0)))
      })
    })
    const pid = child.pid
    if (pid === undefined) {
      return yield* Effect.async<never, CommandError>((resume) => {
        child.once("error", (error) =>
          resume(Effect.fail(new CommandError({ message: `${file}: ${error.message}` })))
        )
      })
    }
    if (pipeOutput) {
      const echo = options.echoOutput ?? true
      // Synchronous: two async writes to one file descriptor may land out of order.
      const copy = (to: NodeJS.WriteStream, chunk: Buffer) => {
        if (output !== undefined) writeSync(output, chunk)
        else if (echo) to.write(chunk)
      }
      child.stdout?.on("data", (chunk: Buffer) => {
        copy(process.stdout, chunk)
        if (parse) agent.output("stdout", chunk)
      })
      child.stderr?.on("data", (chunk: Buffer) => {
        copy(process.stderr, chunk)
        if (parse) agent.output("stderr", chunk)
      })
    }
    if (options.forwardSignals === true) {
      // The runtime's own SIGINT/SIGTERM handlers would interrupt the agent; while the command runs,
      // signals are the command's to handle, and the agent follows its exit.
      const saved = forwardedSignals.map((signal) => [signal, process.listeners(signal)] as const)
      const forward = (signal: NodeJS.Signals) => {
        child.kill(signal)
      }
      for (const [signal] of saved) {
        process.removeAllListeners(signal)
        process.on(signal, forward)
      }
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          for (const [signal, listeners] of saved) {
            process.removeListener(signal, forward)
            for (const listener of listeners) process.on(signal, listener as NodeJS.SignalsListener)
          }
        })
      )
    }
    yield* agent
      .trace(pid)
      .pipe(
        Effect.mapError(
          (error) => new CommandError({ message: `cannot trace ${file} (pid ${pid}): ${error.message}` })
        )
      )
    // Resume only once the shell has stopped itself (else SIGCONT could arrive first and be lost).
    yield* Effect.promise(async () => {
      for (let i = 0; i < 1000 && processState(pid) !== "T"; i++) {
        if (child.exitCode !== null) return
        await new Promise((resolve) => setTimeout(resolve, 2))
      }
    })
    // The held shell can only exec the command after this SIGCONT: moved now, the command makes
    // every socket inside the propagating cgroup (a socket's cgroup is fixed when it is created).
    const commandCgroup = agent.commandCgroup
    if (commandCgroup !== undefined) {
      try {
        CommandCgroup.enter(commandCgroup, pid)
      } catch (error) {
        yield* Effect.logWarning(
          `propagation: off for ${file}: cannot move it into ${commandCgroup}: ${Errors.messageOf(error)}`
        )
      }
    }
    child.kill("SIGCONT")
    yield* Effect.logInfo(`started ${argv.join(" ")} (pid ${pid})`)
    return { pid, exitCode: Effect.promise(() => exited) }
  })

/** Runs the command to its end; returns its exit status. */
export const run = (
  argv: ReadonlyArray<string>,
  options: Options = {}
): Effect.Effect<number, CommandError, Agent> =>
  Effect.scoped(Effect.flatMap(start(argv, options), (running) => running.exitCode))
