/**
 * Loads the TLS listener's certificate and key (and the CA of peers' client certificates) once, at start, so a bad file stops the node with an
 * error naming it instead of failing every handshake later.
 */

import { createPrivateKey, X509Certificate } from "node:crypto"
import { createSecureContext } from "node:tls"
import { Errors } from "@iii/core"
import { Effect } from "effect"
import { TlsError } from "../../Errors.js"
import { readSettingsFile } from "./SettingsFile.js"

export interface TlsCredentials {
  readonly cert: Buffer
  readonly key: Buffer
  /** Subject of the leaf certificate, for the start-up log. */
  readonly subject: string
  /** End of the leaf certificate's validity. */
  readonly validTo: Date
  /** PEM CA certificate(s) that sign cluster peers' client certificates, when configured. */
  readonly clientCa: Buffer | undefined
}

const attempt = <A>(file: string, reason: string, f: () => A) =>
  Effect.try({
    try: f,
    catch: (cause) => new TlsError({ file, reason: `${reason}: ${Errors.messageOf(cause)}`, cause })
  })

/** A CA file: readable, and every certificate in it PEM (a bundle may hold several). */
const loadCa = (file: string) =>
  Effect.gen(function* () {
    const ca = yield* attempt(file, `cannot read TLS client CA ${file}`, () => readSettingsFile(file))
    const pems = ca.toString("utf8").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)
    if (pems === null)
      return yield* new TlsError({ file, reason: `TLS client CA ${file} holds no PEM certificate` })
    for (const pem of pems)
      yield* attempt(file, `TLS client CA ${file} is not a PEM certificate`, () => new X509Certificate(pem))
    return ca
  })

export const loadTlsCredentials = (
  certFile: string,
  keyFile: string,
  clientCaFile?: string
): Effect.Effect<TlsCredentials, TlsError> =>
  Effect.gen(function* () {
    const cert = yield* attempt(certFile, `cannot read TLS certificate ${certFile}`, () =>
      readSettingsFile(certFile)
    )
    const key = yield* attempt(keyFile, `cannot read TLS key ${keyFile}`, () => readSettingsFile(keyFile))
    const leaf = yield* attempt(
      certFile,
      `TLS certificate ${certFile} is not a PEM certificate`,
      () => new X509Certificate(cert)
    )
    const privateKey = yield* attempt(
      keyFile,
      `TLS key ${keyFile} is not an unencrypted PEM private key`,
      () => createPrivateKey(key)
    )
    if (!leaf.checkPrivateKey(privateKey))
      return yield* new TlsError({
        file: keyFile,
        reason: `TLS key ${keyFile} does not belong to the certificate ${certFile}`
      })
    yield* attempt(certFile, `TLS certificate ${certFile} and key ${keyFile} are not usable`, () =>
      createSecureContext({ cert, key })
    )
    const clientCa = clientCaFile === undefined ? undefined : yield* loadCa(clientCaFile)
    return {
      cert,
      key,
      subject: leaf.subject.replaceAll("\n", ", "),
      validTo: new Date(leaf.validTo),
      clientCa
    }
  })
