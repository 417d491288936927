import { useEffect, useState } from "preact/hooks"
import { Unauthorized } from "./api.js"

export interface Loaded<A> {
  readonly data: A | undefined
  readonly error: Error | undefined
  readonly loading: boolean
}

/**
 * Runs `load` when `key` changes (and every `refreshMs`, when given); keeps the last answer while the
 * next one loads, so a refreshing page does not flicker.
 */
export const useQuery = <A>(load: () => Promise<A>, key: string, refreshMs?: number): Loaded<A> => {
  const [state, setState] = useState<Loaded<A>>({ data: undefined, error: undefined, loading: true })
  useEffect(() => {
    let live = true
    setState((s) => ({
      ...s,
      loading: true,
      ...(s.error instanceof Unauthorized ? { error: undefined } : {})
    }))
    const run = () =>
      load().then(
        (data) => live && setState({ data, error: undefined, loading: false }),
        (error: Error) => live && setState((s) => ({ data: s.data, error, loading: false }))
      )
    run()
    const timer = refreshMs === undefined ? undefined : setInterval(run, refreshMs)
    return () => {
      live = false
      if (timer !== undefined) clearInterval(timer)
    }
  }, [key])
  return state
}
