/**
 * Every error @iii/controller can fail with. Foreign failures (HTTP, the API server, child processes)
 * are wrapped once, where they happen.
 */
import { Data } from "effect"

/** The API server answered with a non-2xx status (or the request never got an answer: `status` 0). */
export class KubeApiError extends Data.TaggedError("KubeApiError")<{
  readonly method: string
  readonly path: string
  /** HTTP status; 0 when the server could not be reached. */
  readonly status: number
  /** The Status object's reason (`Conflict`, `NotFound`, `Expired`, …) when the server sent one. */
  readonly reason: string
  readonly message: string
}> {}

/** No usable kubeconfig: none given, none in KUBECONFIG or ~/.kube/config, and not running in a pod. */
export class KubeConfigError extends Data.TaggedError("KubeConfigError")<{ readonly message: string }> {}

/** This instance lost (or never got) the leader Lease; its actors have been stopped. */
export class LeadershipLost extends Data.TaggedError("LeadershipLost")<{ readonly holder: string }> {}
