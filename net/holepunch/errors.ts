/**
 * Typed errors of the hole-punching service. Each sets `name` so status
 * reports, logs and metrics can tell them apart after they crossed an
 * `await` or were serialised for `fleetmesh doctor`.
 */

import { CodedError, errorMessage } from '../../lib/index.ts'
import type { Endpoint } from './nat.ts'

/** Why an attempt was not made (or given up before punching) */
export type SkipReason = 'disabled' | 'symmetric-nat' | 'no-observation' | 'backoff'

/** Why a peer declined to punch with us */
export type RefuseReason = 'disabled' | 'busy' | 'no-observation' | 'symmetric-nat'

/**
 * An observer did not tell us our external address: it could not be reached,
 * did not answer in time, or closed the connection first.
 */
export class ObserverUnreachableError extends Error {
  override readonly name = 'ObserverUnreachableError'
  readonly observer: string

  constructor(observer: string, detail: string, options?: ErrorOptions) {
    super(
      `could not learn the external address from observer ${observer}: ${detail}; check that the ` +
        'relay/coordinator runs startObserver() on that port and that outbound TCP to it is allowed',
      options,
    )
    this.observer = observer
  }
}

/** An observer answered something that is not one `{"type":"observed",…}` line */
export class ObserverResponseError extends Error {
  override readonly name = 'ObserverResponseError'
  readonly observer: string

  constructor(observer: string, detail: string) {
    super(
      `observer ${observer} sent an invalid answer (${detail}); expected one JSON line ` +
        '{"type":"observed","address":"<ipv4>","port":<n>}: is that port really a fleetmesh observer?',
    )
    this.observer = observer
  }
}

/**
 * The punch port cannot be used for this connect: something listens on it
 * (`EADDRINUSE`) or a socket to the same peer from it is still open
 * (`EADDRNOTAVAIL`). Retrying the same port cannot help.
 */
export class PunchPortUnusableError extends CodedError {
  override readonly name = 'PunchPortUnusableError'
  readonly port: number

  constructor(port: number, code: string, options?: ErrorOptions) {
    super(
      code,
      code === 'EADDRINUSE'
        ? `punch port ${port} is in use by a listening socket (EADDRINUSE); nothing may listen on the punch ` +
            'port: configure a different punchPort (never the libp2p listen port)'
        : `cannot connect from punch port ${port} (${code}): a connection to the same peer endpoint from this ` +
            'port is still open; close it before punching again',
      options,
    )
    this.port = port
  }
}

/** No simultaneous open happened before the deadline */
export class HolePunchTimeoutError extends Error {
  override readonly name = 'HolePunchTimeoutError'
  readonly target: Endpoint
  readonly attempts: number
  /** Failed attempts by error code (`ETIMEDOUT`, `ECONNREFUSED`, …) */
  readonly errors: Readonly<Record<string, number>>
  readonly elapsedMs: number

  constructor(
    target: Endpoint,
    localPort: number,
    attempts: number,
    errors: Record<string, number>,
    elapsedMs: number,
  ) {
    const summary = Object.entries(errors)
      .map(([code, n]) => `${code}×${n}`)
      .join(', ')
    super(
      `no direct connection to ${target.address}:${target.port} from punch port ${localPort} after ` +
        `${attempts} attempts in ${elapsedMs} ms (${summary || 'no errors'}); the NATs likely do not allow ` +
        'TCP simultaneous open (symmetric mapping, or a firewall that answers RST): keep using the relay',
    )
    this.target = target
    this.attempts = attempts
    this.errors = errors
    this.elapsedMs = elapsedMs
  }
}

/**
 * Both peers are behind the same public address, none of the peer's LAN
 * addresses answered, and the punch to the shared external endpoint failed:
 * the router does not hairpin. Neither a symmetric NAT nor a firewall is to
 * blame, so this replaces {@link HolePunchTimeoutError}'s wording.
 */
export class SameNatUnreachableError extends Error {
  override readonly name = 'SameNatUnreachableError'
  readonly publicAddress: string

  constructor(publicAddress: string, lanTried: readonly string[], options?: ErrorOptions) {
    const lan =
      lanTried.length === 0
        ? 'no LAN connection came up (the peer offered no LAN address: it listens on none in a private range)'
        : `no LAN address answered (${lanTried.join(', ')})`
    super(
      `both this host and the peer are behind the same public address ${publicAddress}; ${lan}; ` +
        'the router does not hairpin (a connection to its own public address from the LAN ends at the ' +
        'router): keeping the relay. Let the peer listen on its LAN address, or enable hairpin NAT on the router',
      options,
    )
    this.publicAddress = publicAddress
  }
}

/** We decided not to punch (or stopped before punching), e.g. because a NAT is symmetric */
export class HolePunchSkippedError extends Error {
  override readonly name = 'HolePunchSkippedError'
  readonly reason: SkipReason

  constructor(reason: SkipReason, detail: string) {
    super(`hole punch skipped (${reason}): ${detail}`)
    this.reason = reason
  }
}

/** The remote peer declined to punch */
export class HolePunchRefusedError extends Error {
  override readonly name = 'HolePunchRefusedError'
  readonly reason: RefuseReason

  constructor(reason: RefuseReason, detail: string) {
    super(`the peer declined to hole punch (${reason}): ${detail || 'no detail given'}`)
    this.reason = reason
  }
}

/** A peer has no connection to coordinate over, and none could be opened */
export class NoRelayedConnectionError extends Error {
  override readonly name = 'NoRelayedConnectionError'
}

/** The punched socket connected but the libp2p upgrade (Noise, Yamux) failed */
export class HolePunchUpgradeError extends Error {
  override readonly name = 'HolePunchUpgradeError'
}

/** `{ name, message }` of anything thrown, for status reports and JSON events */
export function errorInfo(err: unknown): { name: string; message: string } {
  return { name: err instanceof Error ? err.name : 'Error', message: errorMessage(err) }
}
