/**
 * Endpoints and NAT classification. A host learns its external endpoint by
 * connecting from its punch port to observers; comparing what two observers
 * saw tells whether the NAT maps one local port to one external port for
 * every destination (punchable) or to a new one per destination (not).
 */

import { isIPv4 } from 'node:net'

/** An IPv4 address and TCP port */
export interface Endpoint {
  address: string
  port: number
}

/**
 * - `none`: the observer saw our local address and port: no NAT on the path
 * - `endpoint-independent`: two observers saw the same external endpoint, so a
 *   peer that punches to it reaches us (Linux MASQUERADE, most home routers)
 * - `symmetric`: they saw different endpoints; a peer cannot predict the
 *   mapping our punch flow will get, so punching is pointless
 * - `unknown`: fewer than two observations (one observer configured or reachable)
 */
export type NatKind = 'none' | 'endpoint-independent' | 'symmetric' | 'unknown'

export const NAT_KINDS = [
  'none',
  'endpoint-independent',
  'symmetric',
  'unknown',
] as const satisfies readonly NatKind[]

export function sameEndpoint(a: Endpoint | undefined, b: Endpoint | undefined): boolean {
  return a !== undefined && b !== undefined && a.address === b.address && a.port === b.port
}

export function formatEndpoint(e: Endpoint): string {
  return `${e.address}:${e.port}`
}

/** IPv4-mapped IPv6 (`::ffff:1.2.3.4`), as Node reports some peers, to plain IPv4 */
export function plainAddress(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:/, '')
}

/**
 * Parse an observer address `a.b.c.d:port`.
 *
 * Only IPv4 literals: the punch port is bound on IPv4, and a name would need a
 * DNS lookup on every probe for no gain (observers are the operator's own hosts).
 */
export function parseEndpoint(value: string): Endpoint {
  const colon = value.lastIndexOf(':')
  const address = value.slice(0, colon)
  const port = Number(value.slice(colon + 1))
  if (colon < 0 || !isIPv4(address) || !Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new TypeError(`observer address "${value}" must be an IPv4 address and port, like 203.0.113.7:4011`)
  }
  return { address, port }
}

/** What one observer saw of a connection from our punch port */
export interface Sighting {
  /** Our socket's own address and port */
  local: Endpoint
  /** The source address and port the observer saw */
  observed: Endpoint
}

/** Classify the NAT from what the observers saw of connections from one local port */
export function classifyNat(sightings: readonly Sighting[]): NatKind {
  if (sightings.length === 0) return 'unknown'
  if (sightings.every((s) => sameEndpoint(s.local, s.observed))) return 'none'
  const distinct = new Set(sightings.map((s) => formatEndpoint(s.observed)))
  if (distinct.size > 1) return 'symmetric'
  return sightings.length >= 2 ? 'endpoint-independent' : 'unknown'
}
