/**
 * Which addresses a host may dial: private addresses (RFC 1918, carrier-grade
 * NAT 100.64/10, link-local, IPv6 ULA and link-local) only where they can be on
 * our network, i.e. in the subnet of one of our own interfaces (the same LAN),
 * or when the operator named them (bootstrap, relays, the coordinator's
 * addresses: a VPN or a routed company network reaches further than a subnet).
 *
 * A peer's private addresses learned from the DHT or identify belong to its
 * own LAN: dialled from elsewhere they reach nothing, or a stranger's host that
 * happens to use the same address, and leave unanswered SYNs at home routers.
 * The exception is LAN discovery: a fleet peer behind our own public address
 * offers its LAN addresses when punching (holepunch/candidates.ts), and those
 * may sit on another subnet of the same site; {@link DialScope.allowLan} lets
 * them through for a while.
 * Used as the connection gater's `denyDialMultiaddr` (host.ts); loopback and
 * public addresses, and names (`/dns…`), always pass.
 */
import { BlockList, isIPv4 } from 'node:net'
import { type NetworkInterfaceInfo, networkInterfaces } from 'node:os'
import type { ConnectionGater } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

const PRIVATE = new BlockList()
for (const [net, bits] of [
  ['10.0.0.0', 8],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
  ['100.64.0.0', 10],
  ['169.254.0.0', 16],
] as const)
  PRIVATE.addSubnet(net, bits, 'ipv4')
PRIVATE.addSubnet('fc00::', 7, 'ipv6')
PRIVATE.addSubnet('fe80::', 10, 'ipv6')

/** Whether `ip` is in a private, carrier-grade NAT or link-local range. */
export function isPrivateIp(ip: string): boolean {
  return PRIVATE.check(ip, isIPv4(ip) ? 'ipv4' : 'ipv6')
}

/** This machine's interfaces, flattened (os.networkInterfaces()). */
export function localInterfaceList(): NetworkInterfaceInfo[] {
  return Object.values(networkInterfaces()).flatMap((infos) => infos ?? [])
}

/** Whether `ip` is in the subnet of one of `interfaces`. */
export function onLocalSubnet(ip: string, interfaces: readonly NetworkInterfaceInfo[]): boolean {
  const type = isIPv4(ip) ? 'ipv4' : 'ipv6'
  return interfaces.some((i) => {
    if (i.cidr === null || (i.family === 'IPv4') !== (type === 'ipv4')) return false
    const bits = Number(i.cidr.split('/')[1])
    const subnet = new BlockList()
    subnet.addSubnet(i.address, bits, type)
    return subnet.check(ip, type)
  })
}

/** The IP address a multiaddr starts with, if it does. */
function leadingIp(addr: Multiaddr): string | undefined {
  const first = addr.getComponents()[0]
  return first?.name === 'ip4' || first?.name === 'ip6' ? first.value : undefined
}

/** How long an address LAN discovery named stays dialable: a punch's LAN stage, with room for retries */
export const LAN_ALLOW_MS = 10 * 60_000
/** The most such addresses kept at once (each punch offers three at most); the oldest go first */
const MAX_LAN_ALLOWED = 256

export interface DialScopeInit {
  /** The machine's interfaces, read at each check (they change with DHCP, VPNs) */
  interfaces?: () => readonly NetworkInterfaceInfo[]
  /** Addresses the operator gave: dialable whatever their range */
  allow?: readonly (string | Multiaddr)[]
}

export class DialScope {
  readonly #interfaces: () => readonly NetworkInterfaceInfo[]
  readonly #allowed = new Set<string>()
  /** Addresses LAN discovery named, and until when (ms since the epoch) they may be dialled */
  readonly #lan = new Map<string, number>()
  /** Dials refused so far */
  denied = 0

  constructor(init: DialScopeInit = {}) {
    this.#interfaces = init.interfaces ?? localInterfaceList
    this.allow(init.allow ?? [])
  }

  /** Addresses named by the operator (a token's, an enrollment's): their IPs stay dialable. */
  allow(addrs: readonly (string | Multiaddr)[]): void {
    for (const addr of addrs) {
      const ip = typeof addr === 'string' ? addr.split('/')[2] : leadingIp(addr)
      if (ip !== undefined && ip !== '') this.#allowed.add(ip)
    }
  }

  /**
   * Private addresses a peer behind our own public address offered as its LAN
   * candidates: dialable for `forMs` even off our subnets (another subnet of the site).
   */
  allowLan(ips: readonly string[], now = Date.now(), forMs = LAN_ALLOW_MS): void {
    for (const ip of ips) {
      this.#lan.delete(ip) // re-inserted last: the map's order is the order of expiry
      this.#lan.set(ip, now + forMs)
    }
    for (const ip of this.#lan.keys()) {
      if (this.#lan.size <= MAX_LAN_ALLOWED) break
      this.#lan.delete(ip)
    }
  }

  /** For the gater: true refuses the dial. */
  denies(addr: Multiaddr, now = Date.now()): boolean {
    const ip = leadingIp(addr)
    if (ip === undefined || !isPrivateIp(ip) || this.#allowed.has(ip)) return false
    if (onLocalSubnet(ip, this.#interfaces())) return false
    const until = this.#lan.get(ip)
    if (until !== undefined && until > now) return false
    this.denied++
    return true
  }
}

/** `gater` with `scope` refusing dials (createHost's `dialScope`); `gater` itself without one. */
export function scopedGater(gater: ConnectionGater, scope: DialScope | undefined): ConnectionGater {
  return scope === undefined ? gater : { ...gater, denyDialMultiaddr: (addr) => scope.denies(addr) }
}
