/**
 * Leader election with a coordination.k8s.io/v1 Lease, the client-go algorithm: a candidate takes the
 * Lease when it is free or its holder has not renewed for `leaseDuration` (measured on the candidate's
 * own clock from when it last saw the record change, so clock skew does not matter); the leader renews
 * every `retryPeriod` and steps down when it could not renew for `renewDeadline`. Optimistic
 * concurrency (resourceVersion, 409 Conflict) makes sure only one candidate wins a round.
 * A leader that stops releases the Lease, so another takes over without waiting for it to expire.
 *
 * A candidate that does not hold the Lease looks at it four times per `retryPeriod`: expiry is
 * judged from when it saw the last renewal, so the sooner it sees it, the sooner it can take over
 * from a leader that died without releasing. With the production settings (15 s / 10 s / 2 s) it
 * takes over at most ~15.5 s after the leader's last renewal; looking once per retry period, as
 * client-go does, it was up to 17 s, before the new leader's first reconcile.
 */
import { hostname } from "node:os"
import { Clock, Duration, Effect, Option, Ref, type Scope } from "effect"
import type { KubeApiError } from "./Errors.js"
import { apiVersionOf, getOption, KubeClient, type KubeObject, pathOf, resources } from "./KubeClient.js"

export interface Settings {
  /** Namespace of the Lease (the controller's own). */
  readonly namespace: string
  /** Lease name. Default `iii-controller`. */
  readonly name: string
  /** This candidate's identity. Default `<hostname>-<random>`. */
  readonly identity: string
  /** How long a Lease holds without renewal. Default 15 s. */
  readonly leaseDuration: Duration.Duration
  /** A leader that cannot renew for this long steps down. Default 10 s. */
  readonly renewDeadline: Duration.Duration
  /** Interval between renewals; a candidate not holding the Lease tries four times as often. Default 2 s. */
  readonly retryPeriod: Duration.Duration
}

export const defaults = (namespace: string): Settings => ({
  namespace,
  name: "iii-controller",
  identity: `${hostname()}-${Math.random().toString(36).slice(2, 8)}`,
  leaseDuration: Duration.seconds(15),
  renewDeadline: Duration.seconds(10),
  retryPeriod: Duration.seconds(2)
})

interface LeaseSpec {
  readonly holderIdentity?: string
  readonly leaseDurationSeconds?: number
  readonly acquireTime?: string
  readonly renewTime?: string
  readonly leaseTransitions?: number
}

/** RFC 3339 with microseconds, the MicroTime format Lease times use. */
const microTime = (millis: number) => new Date(millis).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z")

const leaseSeconds = (d: Duration.Duration) => Math.max(1, Math.ceil(Duration.toSeconds(d)))

export interface Elector {
  /** One acquire-or-renew round; true when this candidate holds the Lease afterwards. */
  readonly tryAcquireOrRenew: Effect.Effect<boolean, never, KubeClient>
  /** Gives the Lease up (holder cleared) if this candidate holds it. */
  readonly release: Effect.Effect<void, never, KubeClient>
  readonly isLeader: Effect.Effect<boolean>
}

export const makeElector = (settings: Settings): Effect.Effect<Elector> =>
  Effect.gen(function* () {
    const leader = yield* Ref.make(false)
    // The last record seen and when (local clock) it changed: expiry is judged from that.
    let observed: { record: string; at: number } | undefined
    const path = pathOf(resources.Lease, settings.namespace)
    const spec = (lease: KubeObject | undefined) => (lease?.spec ?? {}) as LeaseSpec

    const write = (lease: KubeObject | undefined, next: LeaseSpec) =>
      Effect.flatMap(KubeClient, (k) =>
        lease === undefined
          ? k.request({
              method: "POST",
              path,
              body: {
                apiVersion: apiVersionOf(resources.Lease),
                kind: "Lease",
                metadata: { name: settings.name, namespace: settings.namespace },
                spec: next
              }
            })
          : k.request({
              method: "PUT",
              path: `${path}/${settings.name}`,
              body: { ...lease, spec: next }
            })
      )

    const round: Effect.Effect<boolean, KubeApiError, KubeClient> = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const lease = Option.getOrUndefined(
        yield* getOption(resources.Lease, settings.namespace, settings.name)
      )
      const current = spec(lease)
      const record = JSON.stringify([current.holderIdentity, current.renewTime, current.leaseTransitions])
      if (observed?.record !== record) observed = { record, at: now }
      const holder = current.holderIdentity ?? ""
      const held = holder !== "" && holder !== settings.identity
      const durationMs = (current.leaseDurationSeconds ?? leaseSeconds(settings.leaseDuration)) * 1000
      if (held && observed.at + durationMs > now) return false
      const takeover = holder !== settings.identity
      const updated = yield* write(lease, {
        holderIdentity: settings.identity,
        leaseDurationSeconds: leaseSeconds(settings.leaseDuration),
        acquireTime: takeover ? microTime(now) : (current.acquireTime ?? microTime(now)),
        renewTime: microTime(now),
        leaseTransitions: (current.leaseTransitions ?? 0) + (takeover && lease !== undefined ? 1 : 0)
      })
      const u = spec(updated)
      observed = { record: JSON.stringify([u.holderIdentity, u.renewTime, u.leaseTransitions]), at: now }
      return true
    })

    const tryAcquireOrRenew = round.pipe(
      // Conflicts (another candidate won the round) and unreachable servers both mean "not leader now".
      Effect.catchAll((e) =>
        Effect.as(
          e.status === 409 ? Effect.void : Effect.logWarning(`lease ${settings.name}: ${e.message}`),
          false
        )
      ),
      Effect.tap((held) => Ref.set(leader, held))
    )

    const release = Effect.gen(function* () {
      if (!(yield* Ref.get(leader))) return
      const lease = Option.getOrUndefined(
        yield* getOption(resources.Lease, settings.namespace, settings.name)
      )
      if (spec(lease).holderIdentity !== settings.identity) return
      const now = yield* Clock.currentTimeMillis
      yield* write(lease, {
        ...spec(lease),
        holderIdentity: "",
        leaseDurationSeconds: 1,
        renewTime: microTime(now)
      })
      yield* Ref.set(leader, false)
    }).pipe(Effect.catchAll((e) => Effect.logWarning(`releasing lease ${settings.name}: ${e.message}`)))

    return { tryAcquireOrRenew, release, isLeader: Ref.get(leader) }
  })

/**
 * Runs `whileLeader` only while this candidate leads, forever: acquire, run, step down when a renewal
 * deadline passes (closing `whileLeader`'s scope, which stops what it started), acquire again.
 * Interrupting `run` releases the Lease.
 */
export const run = <E, R>(
  settings: Settings,
  whileLeader: Effect.Effect<void, E, R | Scope.Scope>,
  onChange: (leading: boolean) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<never, never, R | KubeClient> =>
  Effect.gen(function* () {
    const elector = yield* makeElector(settings)
    const retry = settings.retryPeriod
    const look = Duration.millis(Duration.toMillis(retry) / 4)
    const leadOnce = Effect.gen(function* () {
      while (!(yield* elector.tryAcquireOrRenew)) yield* Effect.sleep(look)
      yield* Effect.logInfo(`${settings.identity} leads (lease ${settings.namespace}/${settings.name})`)
      yield* onChange(true)
      // The leader's work lives in this scope: stepping down (or being interrupted) closes it.
      yield* Effect.scoped(
        Effect.gen(function* () {
          yield* Effect.forkScoped(
            Effect.catchAllCause(whileLeader, (cause) => Effect.logError("leader work failed", cause))
          )
          let lastRenew = yield* Clock.currentTimeMillis
          while (true) {
            yield* Effect.sleep(retry)
            const now = yield* Clock.currentTimeMillis
            if (yield* elector.tryAcquireOrRenew) lastRenew = now
            else if (now - lastRenew >= Duration.toMillis(settings.renewDeadline)) break
          }
          yield* Effect.logWarning(`${settings.identity} lost the lease`)
        })
      )
      yield* onChange(false)
    })
    return yield* Effect.forever(leadOnce).pipe(Effect.ensuring(elector.release))
  })
