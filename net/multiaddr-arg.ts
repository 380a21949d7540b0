/**
 * The one parser for addresses people give fleetmesh: flags, fleet.json,
 * coordinator.json, enrollment tokens. fleetmesh speaks TCP and QUIC, so an
 * address is
 *
 *   /ip4|/ip6|/dns4|/dns6|/dns/<host>/tcp/<port>|/udp/<port>/quic-v1[/p2p/<peer id>[/p2p-circuit[/p2p/<peer id>]]]
 *
 * the relayed form being `<relay address>/p2p/<relay id>/p2p-circuit`, optionally
 * followed by the target's `/p2p/<peer id>`.
 *
 * Why not just `multiaddr()`: it accepts `/tcp/0` for a peer, DNS names with
 * any characters, `/p2p/abc`, trailing garbage and transports fleetmesh cannot
 * dial, and its errors ("Value must be an integer") name neither the flag nor
 * the file. Here every error names where the address came from, the value and
 * what is expected, and is a UsageError, so the CLI prints it as one line.
 */
import { isIPv4, isIPv6 } from 'node:net'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { errorMessage, UsageError } from '../lib/index.ts'

/**
 * What the address is for:
 * - `dial`: where a peer is reached (port 1-65535; may end in /p2p/<id>; may be relayed)
 * - `listen`: a local TCP listener (an IP, port 0-65535 where 0 is any free port, nothing after it)
 * - `peer`: a dial address that ends in /p2p/<peer id> (bootstrap, reserve-on), so the
 *   peer's identity is checked when connecting
 */
export type AddressUse = 'dial' | 'listen' | 'peer'

const EXPECTED: Record<AddressUse, string> = {
  dial:
    '/ip4|/ip6|/dns4|/dns6|/dns/<host>/tcp/<port 1-65535>[/p2p/<peer id>], or relayed ' +
    '<relay address>/p2p/<relay id>/p2p-circuit[/p2p/<peer id>], e.g. /ip4/203.0.113.7/tcp/4001',
  listen:
    '/ip4|/ip6/<ip>/tcp/<port 0-65535> or /ip4|/ip6/<ip>/udp/<port 0-65535>/quic-v1 (0: any free port), ' +
    'e.g. /ip4/0.0.0.0/tcp/4001',
  peer: '<address>/p2p/<peer id>, e.g. /ip4/198.51.100.9/tcp/4001/p2p/12D3KooW…',
}

/** An address from `source` is unusable; the message says which, why and what is expected. */
export class AddressError extends UsageError {
  override name = 'AddressError'
  readonly source: string
  readonly value: string

  constructor(source: string, value: string, use: AddressUse, reason: string) {
    super(`${source} "${value}" is not a valid address: ${reason}; expected ${EXPECTED[use]}`)
    this.source = source
    this.value = value
  }
}

const DNS_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/

/** Why `host` is no host for `proto`, or undefined when it is one. */
function hostProblem(proto: string, host: string): string | undefined {
  if (proto === 'ip4')
    return isIPv4(host) ? undefined : `"${host}" is not an IPv4 address (four numbers 0-255)`
  if (proto === 'ip6') return isIPv6(host) ? undefined : `"${host}" is not an IPv6 address`
  const ok = host.length <= 253 && host.split('.').every((label) => DNS_LABEL.test(label))
  return ok ? undefined : `"${host}" is not a DNS name (letters, digits and "-" between dots)`
}

/** Why `id` is no peer id, or undefined when it is one. */
function peerIdProblem(id: string | undefined): string | undefined {
  if (id === undefined || id === '') return '/p2p needs a peer id'
  try {
    peerIdFromString(id)
    return undefined
  } catch {
    return `"${id}" is not a peer id (12D3KooW… or Qm…)`
  }
}

/** Why the part after the port is wrong for `use`, or undefined when it is right. */
function tailProblem(tail: readonly string[], use: AddressUse): string | undefined {
  if (tail.length === 0)
    return use === 'peer' ? "it must end in /p2p/<peer id>, so the peer's identity is checked" : undefined
  const rest = `"/${tail.join('/')}"`
  if (use === 'listen') return `a listen address ends after the port, not with ${rest}`
  // [p2p, relay or peer id] [p2p-circuit] [p2p, peer id]
  if (tail[0] !== 'p2p') return `unexpected ${rest} after the port`
  const first = peerIdProblem(tail[1])
  if (first !== undefined) return first
  if (tail.length === 2) return undefined
  if (tail[2] !== 'p2p-circuit' || (tail.length !== 3 && (tail.length !== 5 || tail[3] !== 'p2p')))
    return `unexpected ${rest} after the port`
  if (tail.length === 3)
    return use === 'peer' ? "it must end in /p2p/<peer id>, so the peer's identity is checked" : undefined
  return peerIdProblem(tail[4])
}

/** Parses one address from `source` (a flag like "--listen", or a file and field). */
export function parseAddress(value: string, source: string, use: AddressUse = 'dial'): Multiaddr {
  const fail = (reason: string): never => {
    throw new AddressError(source, value, use, reason)
  }
  if (!value.startsWith('/')) fail('it must start with "/"')
  const [proto = '', host = '', transport, port, ...rest] = value.slice(1).split('/')
  const protos = use === 'listen' ? ['ip4', 'ip6'] : ['ip4', 'ip6', 'dns4', 'dns6', 'dns']
  if (!protos.includes(proto)) fail(`it must start with /${protos.join(', /')}, not "/${proto}"`)
  const badHost = hostProblem(proto, host)
  if (badHost !== undefined) fail(badHost)
  // QUIC: /udp/<port>/quic-v1, then the same tail as TCP
  const quic = transport === 'udp' && rest[0] === 'quic-v1'
  const tail = quic ? rest.slice(1) : rest
  if (transport !== 'tcp' && !quic)
    fail(
      transport === undefined
        ? 'the /tcp/<port> part is missing'
        : `"/${transport}" where /tcp belongs: fleetmesh connects over TCP or QUIC (/udp/<port>/quic-v1)`,
    )
  const lowest = use === 'listen' ? 0 : 1
  const n = /^\d{1,5}$/.test(port ?? '') ? Number(port) : Number.NaN
  if (!(n >= lowest && n <= 65_535)) fail(`the port "${port ?? ''}" is not a number from ${lowest} to 65535`)
  const badTail = tailProblem(tail, use)
  if (badTail !== undefined) fail(badTail)
  try {
    return multiaddr(value)
  } catch (err) {
    // what is left: a detail the grammar above does not see (e.g. an IPv6 zone)
    return fail(errorMessage(err))
  }
}

/**
 * Checks every address of a list and returns it unchanged. `source` names
 * them all (a flag), or each by its index (a file's field).
 */
export function checkAddresses(
  values: readonly string[],
  source: string | ((index: number) => string),
  use: AddressUse = 'dial',
): string[] {
  values.forEach((value, i) => {
    parseAddress(value, typeof source === 'string' ? source : source(i), use)
  })
  return [...values]
}
