/**
 * QUIC beside TCP: the QUIC transport as fleetmesh runs it, the QUIC listen
 * addresses that go with TCP ones, and the dial order (QUIC first, TCP when
 * UDP does not get through).
 *
 * libp2p dials a peer's addresses one after the other, each for up to 6 s, in
 * the address sorter's order, and its default order puts TCP first. The QUIC
 * transport cannot abort a handshake in flight: a dial to a path that drops
 * UDP waits for quinn's idle timeout (10 s) whatever the dial's signal says.
 * So the QUIC dial here gives up after `handshakeTimeoutMs` (a handshake is
 * one round trip; the default leaves room for a lost first flight), and an
 * address whose QUIC handshake timed out goes behind TCP for a while: the
 * next reconnect from a network that blocks UDP does not pay the wait again.
 *
 * @example
 *
 * ```ts
 * const failures = new QuicFailures()
 * createLibp2p({
 *   transports: [tcp(), fastQuic({ failures })],
 *   connectionManager: { addressSorter: quicFirst(failures) },
 *   addresses: { listen: withQuic(['/ip4/0.0.0.0/tcp/4001']) }, // + /ip4/0.0.0.0/udp/4001/quic-v1
 * })
 * ```
 */
import { type QuicComponents, quic } from '@chainsafe/libp2p-quic'
import type { Address, AddressSorter, Connection, DialTransportOptions, Transport } from '@libp2p/interface'
import { circuitRelayAddressesLast, loopbackAddressLast, publicAddressesFirst } from '@libp2p/utils'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { raceSignal } from '../lib/index.ts'
import type { ConnectionTransport } from '../protocol/index.ts'

/**
 * How long a QUIC handshake may take before the dial falls back to the next
 * address. quinn starts with a 333 ms RTT estimate, so a lost first flight is
 * sent again after about a second; 2 s covers that once.
 */
export const QUIC_HANDSHAKE_TIMEOUT_MS = 2_000

/** How long an address whose QUIC handshake timed out stays behind TCP in the dial order. */
export const QUIC_FAILURE_MEMORY_MS = 10 * 60_000

/**
 * Within that memory, how often QUIC to the address is tried again at all.
 * Between tries a dial to it fails at once, so a peer that is down (TCP
 * refused, QUIC silent) is redialled at TCP's pace, not 2 s slower per try.
 */
export const QUIC_REPROBE_MS = 30_000

/** The transport a connection runs over ('quic', 'tcp'); a relayed one names the relay hop's. */
export type TransportName = ConnectionTransport | 'other'

/** A QUIC dial that did not complete its handshake within the time allowed. */
export class QuicHandshakeTimeoutError extends Error {
  override name = 'QuicHandshakeTimeoutError'
}

/** A QUIC dial not made: the address's handshake timed out lately and it is not yet time to try again. */
export class QuicRecentlyFailedError extends Error {
  override name = 'QuicRecentlyFailedError'
}

/** Whether `addr` is a direct QUIC address (`…/udp/<port>/quic-v1…`, not through a relay). */
export function isQuicAddr(addr: Multiaddr): boolean {
  const names = addr.getComponents().map((c) => c.name)
  return names.includes('quic-v1') && !names.includes('p2p-circuit')
}

/**
 * The transport under `addr`: for a circuit address, the one to the relay. A
 * string too (a snapshot that came over the wire), never throwing on one.
 */
export function addrTransport(addr: Multiaddr | string): TransportName {
  const parts = addr.toString().split('/')
  const first = parts.findIndex((p) => p === 'quic-v1' || p === 'tcp')
  if (first === -1) return 'other'
  return parts[first] === 'quic-v1' ? 'quic' : 'tcp'
}

/**
 * The transport a connection runs over (of the hop to the relay when it is
 * relayed); null for one that is neither TCP nor QUIC, which fleetmesh's hosts
 * do not run but a test's may.
 */
export function connectionTransport(conn: Pick<Connection, 'remoteAddr'>): ConnectionTransport | null {
  const t = addrTransport(conn.remoteAddr)
  return t === 'other' ? null : t
}

/**
 * Listen addresses with QUIC beside TCP: a list that names a QUIC address is
 * taken as given (the operator chose); otherwise every TCP address gets a QUIC
 * one on the same IP and the same port number, in UDP (port 0 stays 0: the
 * system picks a free UDP port).
 */
export function withQuic(addrs: readonly string[]): string[] {
  if (addrs.some((a) => isQuicAddr(multiaddr(a)))) return [...addrs]
  const out = [...addrs]
  for (const a of addrs) {
    const m = /^\/(ip4|ip6)\/([^/]+)\/tcp\/(\d+)$/.exec(a)
    if (m === null) continue
    const quicAddr = `/${m[1]}/${m[2]}/udp/${m[3]}/quic-v1`
    if (!out.includes(quicAddr)) out.push(quicAddr)
  }
  return out
}

/** Addresses (IP and UDP port) whose QUIC handshake timed out lately. */
export class QuicFailures {
  readonly #until = new Map<string, number>()
  /** When QUIC to a failed address was last tried. */
  readonly #triedAt = new Map<string, number>()
  readonly #memoryMs: number
  readonly #now: () => number

  constructor(memoryMs = QUIC_FAILURE_MEMORY_MS, now: () => number = Date.now) {
    this.#memoryMs = memoryMs
    this.#now = now
  }

  record(addr: Multiaddr): void {
    const key = udpEndpoint(addr)
    if (key === undefined) return
    this.#until.set(key, this.#now() + this.#memoryMs)
    this.#triedAt.set(key, this.#now())
  }

  forget(addr: Multiaddr): void {
    const key = udpEndpoint(addr)
    if (key === undefined) return
    this.#until.delete(key)
    this.#triedAt.delete(key)
  }

  /**
   * Whether a QUIC dial to `addr` should be made now: always, unless its
   * handshake timed out lately and it was tried less than QUIC_REPROBE_MS ago.
   * A yes for a failed address counts as its next try.
   */
  tryNow(addr: Multiaddr): boolean {
    if (!this.failedLately(addr)) return true
    const key = udpEndpoint(addr) as string
    if (this.#now() - (this.#triedAt.get(key) ?? 0) < QUIC_REPROBE_MS) return false
    this.#triedAt.set(key, this.#now())
    return true
  }

  /** Whether `addr`'s QUIC handshake timed out within the memory. */
  failedLately(addr: Multiaddr): boolean {
    const key = udpEndpoint(addr)
    const until = key === undefined ? undefined : this.#until.get(key)
    if (until === undefined) return false
    if (until > this.#now()) return true
    this.#until.delete(key as string)
    this.#triedAt.delete(key as string)
    return false
  }
}

function udpEndpoint(addr: Multiaddr): string | undefined {
  const cs = addr.getComponents()
  const ip = cs.find((c) => c.name === 'ip4' || c.name === 'ip6')?.value
  const port = cs.find((c) => c.name === 'udp')?.value
  return ip === undefined || port === undefined ? undefined : `${ip}:${port}`
}

/** 0 for QUIC that has not failed lately, 1 for TCP, 2 for anything else, 3 for QUIC that failed lately. */
function transportRank(addr: Multiaddr, failures: QuicFailures): number {
  if (isQuicAddr(addr)) return failures.failedLately(addr) ? 3 : 0
  return addrTransport(addr) === 'tcp' ? 1 : 2
}

/**
 * libp2p's default dial order (public before private, loopback and relayed
 * last, certified first) with QUIC before TCP inside each group, unless that
 * address's QUIC handshake timed out lately.
 */
export function quicFirst(failures: QuicFailures): AddressSorter {
  return (a: Address, b: Address) => {
    const byPlace =
      loopbackAddressLast(a.multiaddr, b.multiaddr) ||
      publicAddressesFirst(a.multiaddr, b.multiaddr) ||
      circuitRelayAddressesLast(a.multiaddr, b.multiaddr)
    if (byPlace !== 0) return byPlace
    if (a.isCertified !== b.isCertified) return a.isCertified ? -1 : 1
    return Math.sign(transportRank(a.multiaddr, failures) - transportRank(b.multiaddr, failures)) as
      | -1
      | 0
      | 1
  }
}

export interface FastQuicInit {
  /** Where timed-out handshakes are recorded (for the sorter) */
  failures: QuicFailures
  /** @default QUIC_HANDSHAKE_TIMEOUT_MS */
  handshakeTimeoutMs?: number
}

/**
 * The QUIC transport with a bounded handshake. A dial that gives up leaves
 * the native handshake running; if it completes after all, the transport's
 * upgrade sees the aborted signal and closes the connection.
 */
export function fastQuic(init: FastQuicInit): (components: QuicComponents) => Transport {
  const timeoutMs = init.handshakeTimeoutMs ?? QUIC_HANDSHAKE_TIMEOUT_MS
  return (components) => {
    const transport = quic()(components)
    const innerDial = transport.dial.bind(transport)
    // an own property over the class's method: the transport keeps its private fields and symbols
    transport.dial = async (ma: Multiaddr, options: DialTransportOptions): Promise<Connection> => {
      if (!init.failures.tryNow(ma))
        throw new QuicRecentlyFailedError(
          `QUIC to ${ma} timed out lately; TCP is used until it is tried again (every ${QUIC_REPROBE_MS / 1000} s)`,
        )
      const giveUp = new AbortController()
      const timer = setTimeout(
        () =>
          giveUp.abort(new QuicHandshakeTimeoutError(`no QUIC handshake with ${ma} within ${timeoutMs} ms`)),
        timeoutMs,
      )
      const signal = AbortSignal.any([options.signal, giveUp.signal])
      try {
        const conn = await raceSignal(innerDial(ma, { ...options, signal }), signal)
        init.failures.forget(ma)
        return conn
      } catch (err) {
        if (giveUp.signal.aborted) init.failures.record(ma)
        throw err
      } finally {
        clearTimeout(timer)
      }
    }
    return transport
  }
}

/** The QUIC transport and the dial order that goes with it, sharing one failure memory (host.ts). */
export function quicDialing(handshakeTimeoutMs?: number): {
  transport: (components: QuicComponents) => Transport
  addressSorter: AddressSorter
} {
  const failures = new QuicFailures()
  return {
    transport: fastQuic({ failures, ...(handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs } : {}) }),
    addressSorter: quicFirst(failures),
  }
}

/** `--listen` help for the daemons that listen (coordinator, relay): how QUIC joins TCP. */
export const QUIC_LISTEN_HELP = {
  description:
    'address to listen on, TCP (/tcp/<port>) or QUIC (/udp/<port>/quic-v1); a list without a QUIC address ' +
    'gets /udp/<same port>/quic-v1 beside each TCP one, a list with one is taken as given',
  default: '/ip4/0.0.0.0/tcp/4001 and /ip4/0.0.0.0/udp/4001/quic-v1',
} as const
