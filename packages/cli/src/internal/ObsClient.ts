/**
 * The terminal tools' way to an obs node: which node (`--obs URL`, else the one a running `iii up`
 * announced, else `iii up`'s default address), which token (`--token-file F`, else `iii up`'s when
 * talking to it), and failures that read as one line: unreachable, token missing or refused, bad
 * parameter.
 */
import { existsSync, readFileSync } from "node:fs"
import { Options } from "@effect/cli"
import { Data, Effect, Option } from "effect"
import WebSocket from "ws"
import * as UpHome from "./UpHome.js"

export class ObsError extends Data.TaggedError("ObsError")<{ readonly message: string }> {}

export const obsOption = Options.text("obs").pipe(
  Options.optional,
  Options.withDescription(
    `obs node URL (default: the node of a running iii up, else http://127.0.0.1:${UpHome.defaultPort})`
  )
)
export const tokenFileOption = Options.text("token-file").pipe(
  Options.optional,
  Options.withDescription("file holding the obs token (default: iii up's, when talking to its node)")
)

export interface Target {
  readonly url: string
  readonly token: string | undefined
}

const readToken = (file: string) =>
  Effect.try({
    try: () => readFileSync(file, "utf8").trim(),
    catch: (e) => new ObsError({ message: `cannot read the token file ${file}: ${(e as Error).message}` })
  })

/** The node and token the flags (or `iii up`) point at. */
export const target = (obs: Option.Option<string>, tokenFile: Option.Option<string>) =>
  Effect.gen(function* () {
    const home = UpHome.defaultHome()
    const running = UpHome.readRunning(home)
    const url = Option.getOrElse(obs, () => running?.url ?? `http://127.0.0.1:${UpHome.defaultPort}`).replace(
      /\/+$/,
      ""
    )
    if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol))
      return yield* new ObsError({ message: `--obs: not an http:// or https:// URL: "${url}"` })
    // iii up's token, when talking to iii up's node.
    const upsNode = Option.isNone(obs) || (running !== undefined && running.url === url)
    const defaultToken = upsNode ? (running?.tokenFile ?? UpHome.paths(home).token) : undefined
    const token = Option.isSome(tokenFile)
      ? yield* readToken(tokenFile.value)
      : defaultToken !== undefined && existsSync(defaultToken)
        ? yield* readToken(defaultToken)
        : undefined
    return { url, token } satisfies Target
  })

const describeNetworkError = (error: unknown): string => {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause
  return cause?.code ?? cause?.message ?? (error as Error).message
}

const refused = (t: Target) =>
  new ObsError({
    message:
      t.token === undefined
        ? `obs at ${t.url} needs a token: pass --token-file FILE`
        : `obs at ${t.url} refused the token (check --token-file)`
  })

/** GET a query API path; the answer's JSON, or an ObsError with one line saying why not. */
export const getJson = <A>(t: Target, path: string, params: Record<string, string | undefined> = {}) =>
  Effect.gen(function* () {
    const query = new URLSearchParams()
    for (const [k, v] of Object.entries(params)) if (v !== undefined) query.set(k, v)
    const q = query.toString()
    const res = yield* Effect.tryPromise({
      try: (signal) =>
        fetch(`${t.url}${path}${q === "" ? "" : `?${q}`}`, {
          signal,
          headers: t.token === undefined ? {} : { authorization: `Bearer ${t.token}` }
        }),
      catch: (e) =>
        new ObsError({
          message: `cannot reach obs at ${t.url} (${describeNetworkError(e)}): is iii up running? Or pass --obs URL`
        })
    })
    if (res.status === 401) return yield* refused(t)
    const body = yield* Effect.tryPromise({
      try: () => res.json() as Promise<A & { error?: string }>,
      catch: () =>
        new ObsError({ message: `obs at ${t.url} answered ${res.status} without JSON: is that an obs node?` })
    })
    if (res.status === 404 && body.error !== undefined) return yield* new ObsError({ message: body.error })
    if (!res.ok) return yield* new ObsError({ message: `obs: ${body.error ?? `HTTP ${res.status}`}` })
    return body as A
  })

/** The live tail, open, as `iii tail` reads it (the socket library's types stay out of this module's). */
export interface TailSocket {
  readonly onMessage: (f: (text: string) => void) => void
  readonly onClose: (f: (code: number, reason: string) => void) => void
  readonly close: () => void
}

const tailSocket = (ws: WebSocket): TailSocket => ({
  onMessage: (f) => ws.on("message", (data) => f(String(data))),
  onClose: (f) => ws.on("close", (code, reason) => f(code, reason.toString())),
  close: () => ws.close()
})

/** The live tail's WebSocket, open; fails with one line when the node is unreachable or refuses. */
export const openTail = (t: Target, params: Record<string, string | undefined>) =>
  Effect.async<TailSocket, ObsError>((resume) => {
    const query = new URLSearchParams({ format: "json" })
    for (const [k, v] of Object.entries(params)) if (v !== undefined) query.set(k, v)
    const ws = new WebSocket(`${t.url.replace(/^http/, "ws")}/v1/tail?${query}`, {
      headers: t.token === undefined ? {} : { authorization: `Bearer ${t.token}` }
    })
    ws.once("open", () => resume(Effect.succeed(tailSocket(ws))))
    ws.once("unexpected-response", (_req, res) => {
      let text = ""
      res.on("data", (d: Buffer) => {
        text += d.toString()
      })
      res.on("end", () => {
        ws.terminate()
        if (res.statusCode === 401) return resume(Effect.fail(refused(t)))
        let error = `HTTP ${res.statusCode}`
        try {
          error = (JSON.parse(text) as { error?: string }).error ?? error
        } catch {}
        resume(Effect.fail(new ObsError({ message: `obs: ${error}` })))
      })
    })
    ws.once("error", (e) =>
      resume(
        Effect.fail(
          new ObsError({
            message: `cannot reach obs at ${t.url} (${(e as NodeJS.ErrnoException).code ?? e.message}): is iii up running? Or pass --obs URL`
          })
        )
      )
    )
  })
