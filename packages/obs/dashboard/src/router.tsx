/**
 * Client-side routes on the History API: every page has its own address, filters live in the query
 * string, and a reload (the node answers every dashboard path with index.html) lands on the same page.
 */
import type { AnchorHTMLAttributes, ComponentChildren } from "preact"
import { useEffect, useState } from "preact/hooks"

export interface Location {
  readonly path: string
  readonly params: URLSearchParams
}

const current = (): Location => ({ path: location.pathname, params: new URLSearchParams(location.search) })

const listeners = new Set<() => void>()

export const navigate = (url: string, options: { replace?: boolean } = {}): void => {
  if (url === location.pathname + location.search) return
  if (options.replace === true) history.replaceState(null, "", url)
  else history.pushState(null, "", url)
  for (const l of listeners) l()
}

export const useLocation = (): Location => {
  const [loc, setLoc] = useState(current)
  useEffect(() => {
    const update = () => setLoc(current())
    listeners.add(update)
    addEventListener("popstate", update)
    return () => {
      listeners.delete(update)
      removeEventListener("popstate", update)
    }
  }, [])
  return loc
}

/**
 * Clicks on links to this origin change pages without a reload (one listener for the document, so
 * links stay plain anchors); a modified click still opens a new tab.
 */
export const interceptLinks = (): void =>
  document.addEventListener("click", (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return
    const anchor = (e.target as Element | null)?.closest("a")
    const href = anchor?.getAttribute("href")
    if (anchor === null || anchor === undefined || href === null || href === undefined) return
    if (anchor.target !== "" || !href.startsWith("/") || href.startsWith("//")) return
    e.preventDefault()
    navigate(href)
  })

export const Link = (
  props: AnchorHTMLAttributes<HTMLAnchorElement> & { href: string; children?: ComponentChildren }
) => <a {...props} />

/** The query string of a page's filters, without the empty ones. */
export const withParams = (path: string, params: Record<string, string | undefined>): string => {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") q.set(k, v)
  const text = q.toString()
  return text === "" ? path : `${path}?${text}`
}
