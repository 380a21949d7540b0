/**
 * LAN candidates: where a peer behind the same NAT can reach this host without
 * going through the router's public address (which most home routers do not
 * hairpin, so a punch to the shared external endpoint hits the router itself).
 *
 * A CONNECT offer lists endpoints "best first" (messages.ts): the observed
 * external endpoint, then up to {@link MAX_LAN_CANDIDATES} libp2p TCP listen
 * addresses in private ranges. Older peers read only the first entry, so the
 * extra ones cost them nothing. A peer's candidates are taken only when both
 * sides saw the same public address, and only private IPv4 ones: an offer
 * cannot make this host dial a public address, or loopback, in the peer's name.
 * A dial to one ends in a Noise handshake that must prove the peer's id.
 */
import { BlockList } from 'node:net'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { PunchOffer } from './coordination.ts'
import type { Endpoint } from './nat.ts'

/** The offer holds four endpoints at most: the observed one and three of these */
export const MAX_LAN_CANDIDATES = 3

/** RFC 1918 only: link-local and carrier-grade NAT ranges are not one home's LAN */
const LAN_RANGES = new BlockList()
for (const [net, bits] of [
  ['10.0.0.0', 8],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
] as const)
  LAN_RANGES.addSubnet(net, bits, 'ipv4')

/** Whether `address` is an IPv4 address of a private LAN range (RFC 1918) */
export function isLanAddress(address: string): boolean {
  return LAN_RANGES.check(address, 'ipv4')
}

function saneEndpoint(e: Endpoint): boolean {
  return isLanAddress(e.address) && Number.isInteger(e.port) && e.port >= 1 && e.port <= 65_535
}

/**
 * This host's LAN candidates: its libp2p TCP listen addresses (`/ip4/<a>/tcp/<p>`,
 * nothing relayed, no other transport) in private ranges, at most {@link MAX_LAN_CANDIDATES}.
 */
export function lanCandidates(listening: readonly Multiaddr[]): Endpoint[] {
  const found = new Map<string, Endpoint>()
  for (const addr of listening) {
    const parts = addr.getComponents()
    const [ip, tcp] = parts
    if (ip?.name !== 'ip4' || tcp?.name !== 'tcp' || ip.value === undefined || tcp.value === undefined)
      continue
    // a bare TCP listener: a further component (/p2p-circuit, /ws, …) is another way in
    if (parts.slice(2).some((p) => p.name !== 'p2p')) continue
    const candidate = { address: ip.value, port: Number(tcp.value) }
    if (saneEndpoint(candidate)) found.set(`${candidate.address}:${candidate.port}`, candidate)
  }
  return [...found.values()].slice(0, MAX_LAN_CANDIDATES)
}

/** The public address both offers share, if they do: then the peers sit behind one NAT */
export function sharedPublicAddress(local: PunchOffer, remote: PunchOffer): string | undefined {
  const ours = local.observed[0]?.address
  return ours !== undefined && ours === remote.observed[0]?.address ? ours : undefined
}

/** The LAN candidates of an offer (the peer's, checked): private IPv4 endpoints after the observed one */
export function offeredLanCandidates(offer: PunchOffer): Endpoint[] {
  return offer.observed.slice(1).filter(saneEndpoint).slice(0, MAX_LAN_CANDIDATES)
}
