/**
 * Where the coordinator listens when `--listen` is not given: where `fleetmesh
 * init` said agents would find it (coordinator.json's `listen`, copied from
 * `--coordinator-addr`), so the tokens' addresses and the open port agree. Not
 * every address agents dial can be listened on: a DNS name or an IP this host
 * does not have (a cloud VM's public IP, a router's forwarded port) becomes the
 * same port on every interface, and a relayed address (/p2p-circuit) is reached
 * through a relay reservation (`--reserve-on`), not a listener. Each such
 * change comes with a note the daemon prints at start.
 */
import { networkInterfaces } from 'node:os'

export interface ListenPlan {
  /** Empty: listen on the host's default addresses. */
  listen: string[]
  /** One line per address that was changed or skipped, for the ready output. */
  notes: string[]
}

/** `local`: the IP addresses of this host's interfaces (a parameter for tests). */
export function listenFromConfig(recorded: readonly string[], local = localAddresses()): ListenPlan {
  const listen: string[] = []
  const notes: string[] = []
  for (const addr of recorded) {
    if (addr.includes('/p2p-circuit')) {
      notes.push(`${addr} is relayed: not listened on (reserve a slot on its relay with --reserve-on)`)
      continue
    }
    // /ip4/<ip>/tcp/<port>[/p2p/<id>] (or /udp/<port>/quic-v1) and the DNS forms; anything else is left to --listen
    const m = /^\/(ip4|ip6|dns4|dns6|dns)\/([^/]+)\/(tcp\/\d+|udp\/\d+\/quic-v1)(?:\/p2p\/[^/]+)?$/.exec(addr)
    if (m === null) {
      notes.push(`${addr}: not a TCP or QUIC address this coordinator can listen on; skipped (use --listen)`)
      continue
    }
    const [, proto, host, port] = m as unknown as [string, string, string, string]
    let chosen: string
    if ((proto === 'ip4' || proto === 'ip6') && (local.has(host) || host === '0.0.0.0' || host === '::'))
      chosen = `/${proto}/${host}/${port}`
    else {
      chosen = proto === 'ip6' || proto === 'dns6' ? `/ip6/::/${port}` : `/ip4/0.0.0.0/${port}`
      const why = proto.startsWith('dns') ? 'is a DNS name' : 'is not an address of this host'
      notes.push(`${addr} ${why}: listening on ${chosen} instead`)
    }
    if (!listen.includes(chosen)) listen.push(chosen)
  }
  return { listen, notes }
}

function localAddresses(): Set<string> {
  const found = new Set<string>()
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) found.add(i.address)
  return found
}
