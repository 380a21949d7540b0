/**
 * The base of fleetmesh's typed errors. An error class with several causes
 * extends {@link CodedError} so a caller (and the wire protocol, and the
 * metrics that count failures) can branch on a stable `code` instead of
 * parsing a message meant for people.
 */

/**
 * An error with a stable machine-readable `code` beside its human message; every
 * typed error in fleetmesh that has several causes extends it.
 */
export class CodedError<C extends string = string> extends Error {
  readonly code: C
  constructor(code: C, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}

/** The message of anything thrown, for logs and reports (a thrown string stays a string). */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
