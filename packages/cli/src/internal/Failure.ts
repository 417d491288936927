/**
 * How a failed `iii` command reads: one or two plain lines on stderr, never a dump of an error
 * object. Pure, so every shape of failure is tested without running a command.
 */
import { ValidationError } from "@effect/cli"
import { ConfigError } from "effect"

/** Failures the command printed itself already (the parser's message and usage, validation problems). */
const alreadyPrinted = (error: unknown) =>
  ValidationError.isValidationError(error) ||
  (typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "ValidationFailed")

/**
 * The line to print for a failure, or undefined when it was printed already. Tagged errors say what
 * went wrong in their `message`; one without a message is named by its tag and fields.
 */
export const describe = (error: unknown): string | undefined => {
  if (alreadyPrinted(error)) return undefined
  if (ConfigError.isConfigError(error)) return `configuration: ${String(error)}`
  if (typeof error === "object" && error !== null) {
    const message = (error as { message?: unknown }).message
    if (typeof message === "string" && message.length > 0) return message
    const { _tag, ...fields } = error as Record<string, unknown>
    if (typeof _tag === "string")
      return Object.keys(fields).length === 0 ? _tag : `${_tag} ${JSON.stringify(fields)}`
  }
  return String(error)
}
