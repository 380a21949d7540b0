/**
 * What makes a lab router a NAT: the iptables rules for each
 * {@link NatBehaviour}, the choice between iptables-nft and iptables-legacy,
 * and the check that this machine can build a lab at all. Used by lab.ts; tests
 * and bench:nat call {@link canRunLab} to skip when the lab cannot run.
 */
import { LabCommandError, nsExec, removeNamespace, run, runQuiet } from './namespaces.ts'
import type { LabRouter, NatBehaviour } from './topology.ts'

/** Whether a lab can run here, and if not, what is missing and how to get it. */
export type LabCheck = { ok: true } | { ok: false; reason: string }

let cachedCheck: LabCheck | undefined

interface IptablesTools {
  iptables: string
  restore: string
}

/** Debian's `iptables` is iptables-nft; kernels without nf_tables need the legacy one. */
let iptables: IptablesTools = { iptables: 'iptables', restore: 'iptables-restore' }

function pickIptables(ns: string): IptablesTools {
  const masquerade = ['-t', 'nat', '-A', 'POSTROUTING', '-j', 'MASQUERADE', '--random-fully']
  try {
    nsExec(ns, 'iptables', masquerade)
    return { iptables: 'iptables', restore: 'iptables-restore' }
  } catch (err) {
    if (!runQuiet('iptables-legacy', ['--version'])) throw err
    nsExec(ns, 'iptables-legacy', masquerade)
    return { iptables: 'iptables-legacy', restore: 'iptables-legacy-restore' }
  }
}

/** The iptables the lab uses, as it names itself, e.g. `iptables v1.8.9 (nf_tables)`. */
export function iptablesBackend(): string {
  return run(iptables.iptables, ['--version']).trim()
}

/**
 * Whether this process can build a lab: Linux, root, `ip netns`, iptables with
 * the nat table and MASQUERADE --random-fully, conntrack and sysctl. The reason
 * says what is missing and how to get it.
 */
export function canRunLab(): LabCheck {
  cachedCheck ??= checkLab()
  return cachedCheck
}

function checkLab(): LabCheck {
  if (process.platform !== 'linux') {
    return { ok: false, reason: `NAT lab needs Linux network namespaces; this is ${process.platform}` }
  }
  if (process.getuid?.() !== 0) {
    return { ok: false, reason: 'NAT lab needs root (it creates network namespaces and iptables rules)' }
  }
  const tools: Array<[string, string[]]> = [
    ['ip', ['-V']],
    ['iptables', ['--version']],
    ['iptables-restore', ['--version']],
    ['conntrack', ['--version']],
    ['sysctl', ['--version']],
  ]
  for (const [tool, args] of tools) {
    if (!runQuiet(tool, args)) {
      return {
        ok: false,
        reason: `NAT lab needs \`${tool}\`; install it with: apt-get install -y iproute2 iptables conntrack procps`,
      }
    }
  }
  const ns = `fm-${process.pid}-check`
  try {
    run('ip', ['netns', 'add', ns])
    iptables = pickIptables(ns)
    nsExec(ns, iptables.iptables, ['-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP'])
    nsExec(ns, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.netfilter.nf_conntrack_tcp_loose=0'])
    nsExec(ns, 'conntrack', ['-F'])
    run('ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge'])
    return { ok: true }
  } catch (err) {
    const detail = err instanceof LabCommandError ? `${err.command}: ${err.stderr.trim()}` : String(err)
    return { ok: false, reason: `NAT lab cannot set up a namespace here (${detail})` }
  } finally {
    removeNamespace(ns)
  }
}

/** The iptables-restore input that makes `router` behave as its {@link NatBehaviour}. */
function routerRules(router: LabRouter, dmzHost: string | null): string {
  const masquerade =
    router.behaviour === 'symmetric'
      ? '-A POSTROUTING -o wan -j MASQUERADE --random-fully'
      : '-A POSTROUTING -o wan -j MASQUERADE'
  const dmz =
    router.behaviour === 'full-cone' && dmzHost !== null
      ? [
          `-A PREROUTING -i wan -p tcp -j DNAT --to-destination ${dmzHost}`,
          `-A PREROUTING -i wan -p udp -j DNAT --to-destination ${dmzHost}`,
        ]
      : []
  const dmzForward =
    router.behaviour === 'full-cone' ? ['-A FORWARD -i wan -o lan -m conntrack --ctstate DNAT -j ACCEPT'] : []
  return [
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD DROP [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    '-A INPUT -m conntrack --ctstate INVALID -j DROP',
    '-A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
    // Unsolicited packets to the router's own address are dropped, not answered
    // with RST: a RST would tear down the peer's conntrack entry mid-punch.
    '-A INPUT -i wan -j DROP',
    '-A FORWARD -m conntrack --ctstate INVALID -j DROP',
    '-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
    '-A FORWARD -i lan -o wan -j ACCEPT',
    // The LAN is a switch: hosts on it reach each other. Where br_netfilter is loaded
    // (bridge-nf-call-iptables=1, also in new namespaces), frames bridged between two
    // LAN ports traverse this chain too, and its DROP policy cut LAN hosts off each other.
    '-A FORWARD -i lan -o lan -j ACCEPT',
    ...dmzForward,
    'COMMIT',
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':INPUT ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ':POSTROUTING ACCEPT [0:0]',
    ...dmz,
    masquerade,
    'COMMIT',
    '',
  ].join('\n')
}

/**
 * (Re)loads `router`'s rules for its behaviour; `dmzHost` is the LAN host a
 * full-cone router forwards everything to (null before it has one).
 */
export function loadRouterRules(router: LabRouter, dmzHost: string | null): void {
  nsExec(router.ns, iptables.restore, [], routerRules(router, dmzHost))
}

/** Turns on forwarding and sets whether conntrack adopts mid-stream TCP (see RouterOptions.tcpLoose). */
export function enableForwarding(router: LabRouter): void {
  nsExec(router.ns, 'sysctl', [
    '-q',
    '-w',
    'net.ipv4.ip_forward=1',
    `net.netfilter.nf_conntrack_tcp_loose=${router.tcpLoose ? 1 : 0}`,
  ])
}

/**
 * Drops (`blocked`) or forwards again what `router` would forward to `ip` (to
 * its TCP `port` only, if given): a firewall between its LAN and one host or
 * service, e.g. to keep a NAT observer out of reach for a while.
 */
export function blockForwardingTo(router: LabRouter, ip: string, blocked: boolean, port?: number): void {
  const match = port === undefined ? ['-d', ip] : ['-d', ip, '-p', 'tcp', '--dport', String(port)]
  nsExec(router.ns, iptables.iptables, [blocked ? '-I' : '-D', 'FORWARD', ...match, '-j', 'DROP'])
}

/**
 * While `on`, `router` hairpins: what its LAN sends to its own public address
 * goes to `host` on the LAN (and back through the router), as a router with a
 * port forward to `host` and NAT loopback does. The loopback is static, to one
 * host: iptables cannot steer a LAN packet into the dynamic mapping another LAN
 * host opened, which is what a full hairpin for punched endpoints would need.
 */
export function hairpinThrough(router: LabRouter, host: string, on: boolean): void {
  const add = on ? '-A' : '-D'
  const nat = (...rule: string[]) => nsExec(router.ns, iptables.iptables, ['-t', 'nat', add, ...rule])
  nat('PREROUTING', '-i', 'lan', '-d', router.publicIp, '-j', 'DNAT', '--to-destination', host)
  // the answer must come back through the router, which undoes the DNAT: so the source becomes the router
  nat('POSTROUTING', '-o', 'lan', '-d', host, '-m', 'conntrack', '--ctstate', 'DNAT', '-j', 'MASQUERADE')
}

/** While `dropped`, `router` forwards no UDP either way: a network that lets only TCP through. */
export function dropUdpThrough(router: LabRouter, dropped: boolean): void {
  nsExec(router.ns, iptables.iptables, [dropped ? '-I' : '-D', 'FORWARD', '-p', 'udp', '-j', 'DROP'])
}

/**
 * Starts counting what `router` forwards from `ip` (a rule with no target: it
 * only counts); the returned function reads the bytes so far (IP packets,
 * headers included).
 */
export function countForwardedFrom(router: LabRouter, ip: string): () => number {
  nsExec(router.ns, iptables.iptables, ['-I', 'FORWARD', '-s', ip])
  return () => {
    const listing = nsExec(router.ns, iptables.iptables, ['-L', 'FORWARD', '-v', '-x', '-n'])
    // `pkts bytes [target] prot opt in out source destination`: ours has no target
    const row = listing
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .find((f) => f.length === 8 && f[6] === ip && f[7] === '0.0.0.0/0')
    return Number(row?.[1] ?? Number.NaN)
  }
}
