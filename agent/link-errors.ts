/** The control link's errors (link.ts), apart so its helpers (link-path.ts) can throw them too. */

export class LinkClosedError extends Error {
  override name = 'LinkClosedError'
}

export class RoundTripTimeoutError extends Error {
  override name = 'RoundTripTimeoutError'
}
