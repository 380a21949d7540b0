/**
 * The NAT lab's vocabulary: how a router maps and filters, and the routers and
 * hosts a lab is built from. Shared by the lab (lab.ts), its router rules
 * (nat-rules.ts) and whoever places processes on lab nodes (tests, bench:nat).
 */

/**
 * How a router maps and filters.
 *
 * - `eim`: endpoint-independent, port-preserving mapping (MASQUERADE keeps the
 *   source port when the resulting tuple is free) with Linux's default
 *   address-and-port-dependent filtering: only packets matching a conntrack entry
 *   come in, unsolicited inbound is dropped silently.
 * - `full-cone`: `eim` plus endpoint-independent filtering, emulated by
 *   forwarding every inbound TCP/UDP packet to the router's single LAN host with
 *   the port unchanged (a "DMZ host"). iptables has no per-mapping EIF; for one
 *   host behind a port-preserving NAT this is observably the same for mapped
 *   ports, and more open for unmapped ones (the host's kernel answers RST).
 * - `symmetric`: MASQUERADE --random-fully, a fresh random external port for
 *   every new connection, so each destination sees a different port.
 */
export type NatBehaviour = 'eim' | 'full-cone' | 'symmetric'

export interface RouterOptions {
  behaviour: NatBehaviour
  /**
   * First three octets of the router's private /24 (e.g. `192.168.1`). Two routers
   * may use the same LAN prefix, as two homes usually do.
   *
   * @default `10.<router index + 1>.0`
   */
  lanPrefix?: string
  /**
   * Whether conntrack picks up TCP connections it has no entry for (mid-stream
   * packets after a flush or restart). Off by default, so a NAT that lost its
   * mappings breaks established connections, as consumer routers do.
   *
   * @default false
   */
  tcpLoose?: boolean
}

export interface LabRouter {
  readonly kind: 'router'
  readonly name: string
  readonly ns: string
  readonly behaviour: NatBehaviour
  /** Address on the public segment; the NAT's external address. */
  readonly publicIp: string
  /** Gateway address on the LAN. */
  readonly lanIp: string
  readonly lanPrefix: string
  readonly tcpLoose: boolean
}

export interface LabHost {
  readonly kind: 'host'
  readonly name: string
  readonly ns: string
  /** The host's own address: private when behind a router, public otherwise. */
  readonly ip: string
  readonly router: LabRouter | null
}

export type LabNode = LabRouter | LabHost
