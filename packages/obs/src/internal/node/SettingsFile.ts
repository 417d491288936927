/**
 * Reads a file named by a setting (the token file, the TLS certificate and key). Only a regular file
 * is read: reading a FIFO or a character device would block start-up forever, deaf to signals, since
 * the read is synchronous.
 */
import { readFileSync, statSync } from "node:fs"

/** The file's bytes; throws for anything but a readable regular file. */
export const readSettingsFile = (path: string): Buffer => {
  if (!statSync(path).isFile()) throw new Error("not a regular file")
  return readFileSync(path)
}
