/** The dashboard: the shell (navigation, correlation-id box, theme, token) and the page for the address. */
import { render } from "preact"
import { useEffect, useRef, useState } from "preact/hooks"
import { onUnauthorized, takeTokenFromLink, token } from "./api.js"
import { Correlate } from "./pages/Correlate.js"
import { ServiceMap } from "./pages/Map.js"
import { Search } from "./pages/Search.js"
import { Service } from "./pages/Service.js"
import { Services } from "./pages/Services.js"
import { Tail } from "./pages/Tail.js"
import { Trace } from "./pages/Trace.js"
import { interceptLinks, Link, type Location, navigate, useLocation } from "./router.js"
import "./style.css"

type Theme = "system" | "light" | "dark"
const themeKey = "iii.theme"

const applyTheme = (theme: Theme) => {
  const dark = theme === "dark" || (theme === "system" && matchMedia("(prefers-color-scheme: dark)").matches)
  document.documentElement.dataset.theme = dark ? "dark" : "light"
}

const Page = (props: { readonly loc: Location }) => {
  const { path } = props.loc
  if (path === "/" || path === "/services") return <Services loc={props.loc} />
  const service = /^\/services\/([^/]+)$/.exec(path)?.[1]
  if (service !== undefined) return <Service loc={props.loc} service={decodeURIComponent(service)} />
  if (path === "/map") return <ServiceMap loc={props.loc} />
  if (path === "/search") return <Search loc={props.loc} />
  const trace = /^\/traces\/([0-9a-f]{32})$/.exec(path)?.[1]
  if (trace !== undefined) return <Trace traceId={trace} />
  if (path === "/tail") return <Tail loc={props.loc} />
  const id = /^\/correlate\/(.+)$/.exec(path)?.[1]
  if (id !== undefined) return <Correlate id={decodeURIComponent(id)} />
  return (
    <section>
      <h1>Not found</h1>
      <p>
        Nothing at {path}. <Link href="/">Services</Link>
      </p>
    </section>
  )
}

const TokenDialog = (props: { readonly onDone: () => void }) => {
  const dialog = useRef<HTMLDialogElement>(null)
  const refused = token.get() !== undefined
  useEffect(() => {
    dialog.current?.showModal()
  }, [])
  return (
    <dialog ref={dialog} class="token" aria-labelledby="token-title" onCancel={(e) => e.preventDefault()}>
      <form
        method="dialog"
        onSubmit={(e) => {
          e.preventDefault()
          const value = String(new FormData(e.target as HTMLFormElement).get("token") ?? "").trim()
          if (value === "") return
          token.set(value)
          dialog.current?.close()
          props.onDone()
        }}
      >
        <h2 id="token-title">{refused ? "The token was refused" : "This obs node needs a token"}</h2>
        <p>
          It is the node's bearer token: with <code>iii up</code>, in the link it printed or in its data
          folder (<code>~/.cache/iii/up/token</code>); in a cluster, in the <code>iii-obs-token</code> Secret.
          It is kept in this browser.
        </p>
        <div class="field">
          <label for="token-token">Token</label>
          <input id="token-token" name="token" type="password" autocomplete="off" required autofocus />
        </div>
        <button type="submit">Use this token</button>
      </form>
    </dialog>
  )
}

const App = () => {
  const loc = useLocation()
  const [needToken, setNeedToken] = useState(false)
  const [generation, setGeneration] = useState(0)
  const [theme, setTheme] = useState<Theme>(
    () => (localStorage.getItem(themeKey) as Theme | null) ?? "system"
  )
  useEffect(() => onUnauthorized(() => setNeedToken(true)), [])
  useEffect(() => {
    applyTheme(theme)
    localStorage.setItem(themeKey, theme)
    const media = matchMedia("(prefers-color-scheme: dark)")
    const follow = () => applyTheme(theme)
    media.addEventListener("change", follow)
    return () => media.removeEventListener("change", follow)
  }, [theme])
  const section = loc.path === "/" ? "/services" : `/${loc.path.split("/")[1] ?? ""}`
  const nav = [
    ["/services", "Services"],
    ["/map", "Map"],
    ["/search", "Traces"],
    ["/tail", "Live tail"]
  ] as const
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link href="/" class="brand" aria-label="iii: services">
          iii
        </Link>
        <nav aria-label="Pages">
          {nav.map(([href, label]) => (
            <Link
              href={href}
              aria-current={
                section === href || (href === "/search" && section === "/traces") ? "page" : undefined
              }
            >
              {label}
            </Link>
          ))}
        </nav>
        <form
          class="correlate"
          aria-label="Find a correlation id or trace id"
          onSubmit={(e) => {
            e.preventDefault()
            const input = (e.target as HTMLFormElement).elements.namedItem("id") as HTMLInputElement
            const id = input.value.trim()
            if (id === "") return
            navigate(/^[0-9a-f]{32}$/.test(id) ? `/traces/${id}` : `/correlate/${encodeURIComponent(id)}`)
            input.value = ""
          }}
        >
          <label for="correlation-box" class="sr-only">
            Correlation id or trace id
          </label>
          <input id="correlation-box" name="id" placeholder="Correlation id or trace id" autocomplete="off" />
          <button type="submit">Go</button>
        </form>
        <label class="theme">
          <span class="sr-only">Colour theme</span>
          <select value={theme} onChange={(e) => setTheme((e.target as HTMLSelectElement).value as Theme)}>
            <option value="system">System theme</option>
            <option value="light">Light</option>
            <option value="dark">Dark</option>
          </select>
        </label>
      </header>
      <main id="main" tabIndex={-1}>
        <Page loc={loc} key={`${loc.path}|${generation}`} />
      </main>
      {needToken && (
        <TokenDialog
          onDone={() => {
            setNeedToken(false)
            setGeneration((g) => g + 1)
          }}
        />
      )}
    </>
  )
}

takeTokenFromLink()
interceptLinks()
applyTheme((localStorage.getItem(themeKey) as Theme | null) ?? "system")
const root = document.getElementById("app")
if (root !== null) {
  root.textContent = ""
  render(<App />, root)
}
