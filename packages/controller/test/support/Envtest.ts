/**
 * Test support, not shipped: a throwaway control plane for tests and benchmarks: a real etcd and a real kube-apiserver on
 * 127.0.0.1 (no kubelet, no controller-manager, so no pod ever runs), the approach of
 * controller-runtime's envtest. The binaries come from `scripts/envtest.sh`, which builds them once
 * into a cache outside the repo.
 *
 * `start` is scoped: closing the scope stops both processes and deletes their data.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { generateKeyPairSync, randomBytes } from "node:crypto"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { Agent, request } from "node:https"
import { homedir, tmpdir } from "node:os"
import { join } from "node:path"
import { KubeClient } from "@iii/controller"
import { Data, Duration, Effect, Either, Schedule, type Scope } from "effect"
import { parseAllDocuments } from "yaml"
import { freePort as freePortNow } from "../../../core/test/fixtures/freePort.ts"

/** The throwaway etcd + kube-apiserver could not be started. */
export class EnvtestError extends Data.TaggedError("EnvtestError")<{ readonly message: string }> {}

type KubeObject = KubeClient.KubeObject

/** Kubernetes and etcd versions `scripts/envtest.sh` builds by default. */
export const kubernetesVersion = process.env.III_K8S_VERSION ?? "1.37.2"
export const etcdVersion = process.env.III_ETCD_VERSION ?? "3.7.3"

export interface Binaries {
  readonly apiserver: string
  readonly etcd: string
}

/**
 * Where the binaries are: `III_KUBE_APISERVER` / `III_ETCD`, else the cache `scripts/envtest.sh`
 * fills (`$III_CACHE/envtest/bin`, default `~/.cache/iii`). Left: why they cannot be had.
 */
export const findBinaries = (): Either.Either<Binaries, string> => {
  const cache = process.env.III_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "iii")
  const apiserver =
    process.env.III_KUBE_APISERVER ?? join(cache, "envtest", "bin", `kube-apiserver-v${kubernetesVersion}`)
  const etcd = process.env.III_ETCD ?? join(cache, "envtest", "bin", `etcd-v${etcdVersion}`)
  const missing = [apiserver, etcd].filter((file) => !existsSync(file))
  return missing.length === 0
    ? Either.right({ apiserver, etcd })
    : Either.left(`${missing.join(" and ")} not found; run \`bash scripts/envtest.sh\` to build them`)
}

/** A user of the static token file: authenticated by `token`, authorised by RBAC through `groups`. */
export interface User {
  readonly name: string
  readonly token: string
  readonly groups?: ReadonlyArray<string>
}

export interface Options {
  /** Users besides the admin (who is in system:masters). */
  readonly users?: ReadonlyArray<User>
  /** Extra kube-apiserver flags, e.g. `--watch-cache=false`. */
  readonly apiserverArgs?: ReadonlyArray<string>
}

export interface Envtest {
  /** `https://127.0.0.1:<port>` */
  readonly server: string
  /** PEM bundle that verifies the API server's self-signed certificate. */
  readonly ca: string
  readonly admin: User
  /** Temp directory holding certs, etcd data and logs; deleted when the scope closes. */
  readonly dir: string
  /** A kubeconfig (YAML) for `user`, pointing at `server` (or another URL, e.g. a proxy). */
  readonly kubeconfig: (user: User, server?: string) => string
}

const freePort = () =>
  Effect.tryPromise({
    try: freePortNow,
    catch: (e) => new EnvtestError({ message: `no free port: ${String(e)}` })
  })

const tail = (file: string) => {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-15).join("\n")
  } catch {
    return ""
  }
}

/**
 * Runs `command` under a bash guard that stops it when this process dies, however it dies (a test
 * runner killing its worker runs no exit handlers): it polls our pid each second. SIGTERM to the
 * guard is passed on to the command, and the guard exits when it does.
 */
const guard = `"$2" "\${@:3}" & child=$!
trap 'kill -TERM $child 2>/dev/null; wait $child; exit' TERM INT
while kill -0 "$1" 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1 & wait $!; done
kill -TERM $child 2>/dev/null; wait $child`

const spawnScoped = (name: string, command: string, args: ReadonlyArray<string>, logFile: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn("bash", ["-c", guard, `envtest-${name}`, String(process.pid), command, ...args], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      const chunks: Array<Buffer> = []
      child.stdout?.on("data", (b: Buffer) => chunks.push(b))
      child.stderr?.on("data", (b: Buffer) => chunks.push(b))
      const flush = () => writeFileSync(logFile, Buffer.concat(chunks))
      child.on("exit", flush)
      // A test runner that dies without closing the scope must not leave the processes behind.
      const killOnExit = () => child.kill("SIGKILL")
      process.once("exit", killOnExit)
      return { name, child, flush, killOnExit }
    }),
    ({ child, killOnExit }) =>
      Effect.async<void>((resume) => {
        process.removeListener("exit", killOnExit)
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        const force = setTimeout(() => child.kill("SIGKILL"), 5000)
        child.once("exit", () => {
          clearTimeout(force)
          resume(Effect.void)
        })
        child.kill("SIGTERM")
      })
  )

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Data dirs of envtests whose process died without closing its scope (the guard stopped the servers). */
const removeOrphanedDirs = () => {
  for (const entry of readdirSync(tmpdir())) {
    const owner = /^iii-envtest-(\d+)-/.exec(entry)?.[1]
    if (owner !== undefined && !alive(Number(owner)))
      rmSync(join(tmpdir(), entry), { recursive: true, force: true })
  }
}

const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null

const get = (url: string, ca: string | undefined, token: string, agent: Agent) =>
  Effect.async<number, EnvtestError>((resume) => {
    const req = request(
      url,
      { method: "GET", headers: { authorization: `Bearer ${token}` }, agent, ...(ca ? { ca } : {}) },
      (res) => {
        res.resume()
        res.on("end", () => resume(Effect.succeed(res.statusCode ?? 0)))
      }
    )
    req.on("error", (e) => resume(Effect.fail(new EnvtestError({ message: e.message }))))
    req.end()
  })

/** Starts etcd and kube-apiserver on free loopback ports; ready (readyz, default namespace) on success. */
export const start = (options: Options = {}): Effect.Effect<Envtest, EnvtestError, Scope.Scope> =>
  Effect.gen(function* () {
    const binaries = yield* Either.match(findBinaries(), {
      onLeft: (message) => Effect.fail(new EnvtestError({ message })),
      onRight: Effect.succeed
    })
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => {
        removeOrphanedDirs()
        return mkdtempSync(join(tmpdir(), `iii-envtest-${process.pid}-`))
      }),
      (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true }))
    )
    const [etcdClient, etcdPeer, securePort] = [yield* freePort(), yield* freePort(), yield* freePort()]

    const admin: User = {
      name: "iii-admin",
      token: randomBytes(16).toString("hex"),
      groups: ["system:masters"]
    }
    const users = [admin, ...(options.users ?? [])]
    writeFileSync(
      join(dir, "tokens.csv"),
      users.map((u) => `${u.token},${u.name},${u.name},"${(u.groups ?? []).join(",")}"`).join("\n")
    )
    const keys = generateKeyPairSync("rsa", {
      modulusLength: 2048,
      publicKeyEncoding: { type: "spki", format: "pem" },
      privateKeyEncoding: { type: "pkcs8", format: "pem" }
    })
    writeFileSync(join(dir, "sa.key"), keys.privateKey)
    writeFileSync(join(dir, "sa.pub"), keys.publicKey)

    const etcd = yield* spawnScoped(
      "etcd",
      binaries.etcd,
      [
        "--name=envtest",
        `--data-dir=${join(dir, "etcd")}`,
        `--listen-client-urls=http://127.0.0.1:${etcdClient}`,
        `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
        `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
        `--initial-cluster=envtest=http://127.0.0.1:${etcdPeer}`,
        "--unsafe-no-fsync",
        "--log-level=error"
      ],
      join(dir, "etcd.log")
    )
    const apiserver = yield* spawnScoped(
      "kube-apiserver",
      binaries.apiserver,
      [
        `--etcd-servers=http://127.0.0.1:${etcdClient}`,
        `--cert-dir=${join(dir, "certs")}`,
        `--secure-port=${securePort}`,
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        // 1.37 refuses a loopback advertise address for the kubernetes Service's endpoints otherwise.
        "--endpoint-reconciler-type=none",
        "--service-cluster-ip-range=10.0.0.0/16", // room for benchmarks with thousands of Services
        "--authorization-mode=RBAC",
        `--token-auth-file=${join(dir, "tokens.csv")}`,
        "--disable-admission-plugins=ServiceAccount",
        `--service-account-key-file=${join(dir, "sa.pub")}`,
        `--service-account-signing-key-file=${join(dir, "sa.key")}`,
        "--service-account-issuer=https://iii.envtest",
        ...(options.apiserverArgs ?? [])
      ],
      join(dir, "kube-apiserver.log")
    )

    const server = `https://127.0.0.1:${securePort}`
    const certFile = join(dir, "certs", "apiserver.crt")
    const agent = new Agent({ keepAlive: false })
    const failIfExited = Effect.suspend(() => {
      for (const p of [etcd, apiserver]) {
        if (exited(p.child)) {
          p.flush()
          return Effect.fail(
            new EnvtestError({
              message: `${p.name} exited (${p.child.exitCode}):\n${tail(join(dir, `${p.name}.log`))}`
            })
          )
        }
      }
      return Effect.void
    })
    // Poll until the API server serves requests: readyz first, then the bootstrap `default` namespace.
    const readyWhen200 = (path: string) =>
      failIfExited.pipe(
        Effect.zipRight(
          Effect.suspend(() => {
            const ca = existsSync(certFile) ? readFileSync(certFile, "utf8") : undefined
            return get(`${server}${path}`, ca, admin.token, agent)
          })
        ),
        Effect.flatMap((status) =>
          status === 200 ? Effect.void : Effect.fail(new EnvtestError({ message: `${path}: HTTP ${status}` }))
        ),
        Effect.retry({
          while: (e) => !e.message.includes("exited"),
          schedule: Schedule.spaced(Duration.millis(100)).pipe(Schedule.upTo(Duration.seconds(90)))
        })
      )
    yield* readyWhen200("/readyz")
    yield* readyWhen200("/api/v1/namespaces/default")
    agent.destroy()
    const ca = readFileSync(certFile, "utf8")

    const kubeconfig = (user: User, url = server) =>
      JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [
          {
            name: "envtest",
            cluster: url.startsWith("https:")
              ? { server: url, "certificate-authority-data": Buffer.from(ca).toString("base64") }
              : { server: url, "insecure-skip-tls-verify": true }
          }
        ],
        users: [{ name: user.name, user: { token: user.token } }],
        contexts: [
          { name: "envtest", context: { cluster: "envtest", user: user.name, namespace: "default" } }
        ],
        "current-context": "envtest"
      })
    return { server, ca, admin, dir, kubeconfig }
  })

const kinds: Record<string, { plural: string; namespaced: boolean }> = {
  Namespace: { plural: "namespaces", namespaced: false },
  ServiceAccount: { plural: "serviceaccounts", namespaced: true },
  ClusterRole: { plural: "clusterroles", namespaced: false },
  ClusterRoleBinding: { plural: "clusterrolebindings", namespaced: false },
  Role: { plural: "roles", namespaced: true },
  RoleBinding: { plural: "rolebindings", namespaced: true },
  CustomResourceDefinition: { plural: "customresourcedefinitions", namespaced: false },
  ServiceComposition: { plural: "servicecompositions", namespaced: true }
}

/**
 * Server-side applies every document of a (multi-document) YAML text as field manager `envtest`
 * (setup only: CRDs, RBAC, namespaces), then waits until any CRD among them serves requests.
 */
export const applyYaml = (text: string) =>
  Effect.gen(function* () {
    const client = yield* KubeClient.KubeClient
    const docs = parseAllDocuments(text)
      .map((d) => d.toJS() as KubeObject | null)
      .filter((d): d is KubeObject => d !== null)
    for (const doc of docs) {
      const info = kinds[doc.kind ?? ""]
      if (info === undefined || doc.apiVersion === undefined) {
        return yield* Effect.fail(new EnvtestError({ message: `applyYaml: unsupported kind ${doc.kind}` }))
      }
      const base = doc.apiVersion.includes("/") ? `/apis/${doc.apiVersion}` : `/api/${doc.apiVersion}`
      const ns = info.namespaced ? `/namespaces/${doc.metadata?.namespace ?? "default"}` : ""
      yield* client
        .request({
          method: "PATCH",
          path: `${base}${ns}/${info.plural}/${doc.metadata?.name}`,
          query: { fieldManager: "envtest", force: "true" },
          contentType: "application/apply-patch+yaml",
          body: doc
        })
        .pipe(Effect.mapError((e) => new EnvtestError({ message: e.message })))
      if (doc.kind === "CustomResourceDefinition") {
        const spec = doc.spec as {
          group: string
          versions: ReadonlyArray<{ name: string }>
          names: { plural: string }
        }
        const path = `/apis/${spec.group}/${spec.versions[0]?.name}/${spec.names.plural}`
        yield* client.request({ method: "GET", path }).pipe(
          Effect.retry(Schedule.spaced(Duration.millis(100)).pipe(Schedule.upTo(Duration.seconds(30)))),
          Effect.mapError((e) => new EnvtestError({ message: `CRD not served: ${e.message}` }))
        )
      }
    }
  })
