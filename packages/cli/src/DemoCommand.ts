/** `iii demo`: another name for `iii up` (which runs the built-in demo when given no file). */
import { make } from "./UpCommand.js"

export const command = make("demo", "The same as `iii up`: with no FILE, runs the built-in demo")
