/**
 * NAT lab: a small internet built from Linux network namespaces, for tests and
 * benchmarks that must see real NAT behaviour (port mapping, filtering, lost
 * mappings) instead of loopback.
 *
 * Topology: one namespace holds a bridge, the "public" segment on TEST-NET-3
 * (203.0.113.0/24). Every router and public host has a veth leg on it. A router
 * namespace has a second leg, a bridge for its private LAN, and iptables rules
 * that make it behave as one of the {@link NatBehaviour}s. Private hosts sit on
 * a router's LAN with it as default gateway. All veth pairs are created directly
 * inside the lab's namespaces, so the host's own network namespace is never
 * touched.
 *
 * Every namespace is named `fm-<pid>-<seq>-…`. {@link Lab.destroy} removes them;
 * it also runs on process exit and on SIGINT/SIGTERM/SIGHUP, and
 * {@link cleanupStale} (called by {@link createLab}) removes what a killed run
 * (SIGKILL) of a dead pid left behind.
 *
 * This file builds labs and is the one tests, bench:nat and fleet-lab.ts import
 * from; the parts live beside it: topology.ts (what a lab is made of),
 * namespaces.ts (commands and namespace life cycle), nat-rules.ts (a router's
 * iptables rules and whether a lab can run here) and lab-process.ts (processes
 * in a namespace and the JSON events they print).
 *
 * @example
 * ```ts
 * const check = canRunLab()
 * describe.skipIf(!check.ok)('nat', () => {
 *   it('maps', async () => {
 *     using lab = createLab()
 *     const home = lab.addRouter('home', { behaviour: 'eim' })
 *     const laptop = lab.addPrivateHost('laptop', home)
 *     const server = lab.addPublicHost('server')
 *     const observer = lab.spawnNode(server, probePath('observer.ts'), ['--port', '7000'])
 *     await observer.waitFor('listening')
 *     // … spawn a client in `laptop` and read what the observer saw
 *   })
 * })
 * ```
 */

import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { LabProcess } from './lab-process.ts'
import { cleanupStale, LabCommandError, listNamespaces, nsExec, removeNamespace, run } from './namespaces.ts'
import {
  blockForwardingTo,
  canRunLab,
  countForwardedFrom,
  dropUdpThrough,
  enableForwarding,
  hairpinThrough,
  loadRouterRules,
} from './nat-rules.ts'
import type { LabHost, LabNode, LabRouter, NatBehaviour, RouterOptions } from './topology.ts'

export {
  LabProcess,
  type ProbeEvent,
  ProbeExitedError,
  ProbeTimeoutError,
  type ProcessExit,
} from './lab-process.ts'
export { cleanupStale, LabCommandError } from './namespaces.ts'
export { canRunLab, iptablesBackend, type LabCheck } from './nat-rules.ts'
export type { LabHost, LabNode, LabRouter, NatBehaviour, RouterOptions } from './topology.ts'

/** How {@link Lab.spawn} starts a process in a namespace. */
export interface SpawnOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Name used in errors; defaults to `<host>:<command basename>`. */
  label?: string
}

/** The public segment: TEST-NET-3, never routed on the real internet. */
const PUBLIC_NET = '203.0.113'
const PUBLIC_CIDR_BITS = 24
const NAME_RE = /^[a-z][a-z0-9]{0,11}$/

const PROBE_DIR = fileURLToPath(new URL('./probe/', import.meta.url))

/** Absolute path of a script in testkit/natlab/probe/. */
export function probePath(script: string): string {
  return `${PROBE_DIR}${script}`
}

const liveLabs = new Set<Lab>()
let hooksInstalled = false

function installExitHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', () => {
    for (const lab of liveLabs) lab.destroy()
  })
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    // Only when nobody else handles the signal: then the default action (exit)
    // is what we restore after cleaning up. A runner with its own handler exits
    // through process.exit, which fires the 'exit' hook above.
    if (process.listenerCount(signal) > 0) continue
    const onSignal = (): void => {
      for (const lab of liveLabs) lab.destroy()
      process.removeListener(signal, onSignal)
      process.kill(process.pid, signal)
    }
    process.on(signal, onSignal)
  }
}

let labSeq = 0

/** Build an empty lab (just the public segment). Removes stale namespaces first. */
export function createLab(): Lab {
  const check = canRunLab()
  if (!check.ok) throw new Error(check.reason)
  cleanupStale()
  installExitHooks()
  return new Lab(`fm-${process.pid}-${labSeq++}`)
}

export class Lab {
  /** Prefix of every namespace of this lab, `fm-<pid>-<seq>`. */
  readonly runId: string
  readonly publicNs: string
  readonly #namespaces: string[] = []
  readonly #routers = new Map<string, LabRouter>()
  readonly #hosts = new Map<string, LabHost>()
  readonly #lanHosts = new Map<string, LabHost[]>()
  readonly #processes = new Set<LabProcess>()
  #publicPorts = 0
  #publicHosts = 0
  #destroyed = false

  constructor(runId: string) {
    this.runId = runId
    this.publicNs = `${runId}-net`
    // Tracked before anything exists, so the exit hooks see a half-built lab too.
    liveLabs.add(this)
    try {
      this.#addNamespace(this.publicNs)
      run('ip', ['-n', this.publicNs, 'link', 'add', 'br0', 'type', 'bridge'])
      run('ip', ['-n', this.publicNs, 'link', 'set', 'br0', 'up'])
    } catch (err) {
      this.destroy()
      throw err
    }
  }

  get routers(): LabRouter[] {
    return [...this.#routers.values()]
  }

  get hosts(): LabHost[] {
    return [...this.#hosts.values()]
  }

  /** A NAT router with a leg on the public segment and an empty private LAN. */
  addRouter(name: string, options: RouterOptions): LabRouter {
    this.#checkName(name)
    const index = this.#routers.size
    if (index >= 80) throw new Error('NAT lab supports at most 80 routers')
    const lanPrefix = options.lanPrefix ?? `10.${index + 1}.0`
    if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(lanPrefix)) {
      throw new Error(`lanPrefix must be three octets like 192.168.1, got ${lanPrefix}`)
    }
    const router: LabRouter = {
      kind: 'router',
      name,
      ns: `${this.runId}-r-${name}`,
      behaviour: options.behaviour,
      publicIp: `${PUBLIC_NET}.${10 + index}`,
      lanIp: `${lanPrefix}.1`,
      lanPrefix,
      tcpLoose: options.tcpLoose ?? false,
    }
    this.#addNamespace(router.ns)
    this.#attachPublic(router.ns, 'wan', router.publicIp)
    run('ip', ['-n', router.ns, 'link', 'add', 'lan', 'type', 'bridge'])
    run('ip', ['-n', router.ns, 'addr', 'add', `${router.lanIp}/24`, 'dev', 'lan'])
    run('ip', ['-n', router.ns, 'link', 'set', 'lan', 'up'])
    // Rules first: their conntrack matches make sure nf_conntrack (and so its
    // sysctls) exists in the namespace.
    loadRouterRules(router, null)
    enableForwarding(router)
    this.#routers.set(name, router)
    this.#lanHosts.set(name, [])
    return router
  }

  /**
   * A host on `router`'s LAN, default route via the router. With `subnet` (three
   * octets, e.g. `10.1.1`) it sits on another /24 of that LAN, which the router
   * also routes (a site with several subnets behind one NAT): the router gains a
   * gateway address there, and hosts of the two subnets reach each other only
   * through it.
   */
  addPrivateHost(name: string, router: LabRouter, options: { subnet?: string } = {}): LabHost {
    this.#checkName(name)
    const lanHosts = this.#lanHosts.get(router.name)
    if (lanHosts === undefined || this.#routers.get(router.name) !== router) {
      throw new Error(`router ${router.name} does not belong to lab ${this.runId}`)
    }
    if (router.behaviour === 'full-cone' && lanHosts.length > 0) {
      throw new Error(
        'full-cone is emulated by forwarding everything to one LAN host; add only one host to it',
      )
    }
    const prefix = options.subnet ?? router.lanPrefix
    if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(prefix))
      throw new Error(`subnet must be three octets like 10.1.1, got ${prefix}`)
    const onSubnet = lanHosts.filter((h) => h.ip.startsWith(`${prefix}.`))
    if (prefix !== router.lanPrefix && onSubnet.length === 0) {
      run('ip', ['-n', router.ns, 'addr', 'add', `${prefix}.1/24`, 'dev', 'lan'])
      // both subnets share the bridge: no ICMP redirect may tell a host to skip the router
      nsExec(router.ns, 'sysctl', [
        '-q',
        '-w',
        'net.ipv4.conf.all.send_redirects=0',
        'net.ipv4.conf.lan.send_redirects=0',
      ])
    }
    const index = lanHosts.length
    const host: LabHost = {
      kind: 'host',
      name,
      ns: `${this.runId}-h-${name}`,
      ip: `${prefix}.${10 + onSubnet.length}`,
      router,
    }
    this.#addNamespace(host.ns)
    const port = `h${index}`
    run('ip', [
      '-n',
      host.ns,
      'link',
      'add',
      'eth0',
      'type',
      'veth',
      'peer',
      'name',
      port,
      'netns',
      router.ns,
    ])
    run('ip', ['-n', router.ns, 'link', 'set', port, 'master', 'lan', 'up'])
    run('ip', ['-n', host.ns, 'addr', 'add', `${host.ip}/24`, 'dev', 'eth0'])
    run('ip', ['-n', host.ns, 'link', 'set', 'eth0', 'up'])
    run('ip', ['-n', host.ns, 'route', 'add', 'default', 'via', `${prefix}.1`])
    lanHosts.push(host)
    this.#hosts.set(name, host)
    if (router.behaviour === 'full-cone') {
      loadRouterRules(router, host.ip)
    }
    return host
  }

  /**
   * A host alone behind its own router `r<name>`. Every such LAN is
   * 192.168.1.0/24, as real homes' are: a punch aimed at a private address
   * would reach the wrong host or nothing, so it cannot pass by accident.
   */
  addHome(name: string, behaviour: NatBehaviour): LabHost {
    return this.addPrivateHost(name, this.addRouter(`r${name}`, { behaviour, lanPrefix: '192.168.1' }))
  }

  /** A host directly on the public segment (no NAT, no firewall). */
  addPublicHost(name: string): LabHost {
    this.#checkName(name)
    if (this.#publicHosts >= 150) throw new Error('NAT lab supports at most 150 public hosts')
    const host: LabHost = {
      kind: 'host',
      name,
      ns: `${this.runId}-h-${name}`,
      ip: `${PUBLIC_NET}.${100 + this.#publicHosts++}`,
      router: null,
    }
    this.#addNamespace(host.ns)
    this.#attachPublic(host.ns, 'eth0', host.ip)
    this.#hosts.set(name, host)
    return host
  }

  /** The address the public segment sees for `host`: its router's, or its own. */
  publicAddressOf(host: LabHost): string {
    return host.router?.publicIp ?? host.ip
  }

  /**
   * Run `command` inside `node`'s namespace (`ip netns exec`). The process is
   * tracked and killed by {@link destroy}; its stdout is read as JSON lines.
   */
  spawn(node: LabNode, command: string, args: readonly string[], options: SpawnOptions = {}): LabProcess {
    this.#checkAlive()
    const child = spawn('ip', ['netns', 'exec', node.ns, command, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd,
    })
    const label = options.label ?? `${node.name}:${command.split('/').pop() ?? command}`
    const proc = new LabProcess(child, label)
    this.#processes.add(proc)
    void proc.exited.then(() => this.#processes.delete(proc))
    return proc
  }

  /** {@link spawn} the running Node binary (the pinned Node 24) on a .ts script. */
  spawnNode(
    node: LabNode,
    script: string,
    args: readonly string[] = [],
    options: SpawnOptions = {},
  ): LabProcess {
    const label = options.label ?? `${node.name}:${script.split('/').pop() ?? script}`
    return this.spawn(node, process.execPath, ['--disable-warning=ExperimentalWarning', script, ...args], {
      ...options,
      label,
    })
  }

  /** Run a command to completion inside `node`'s namespace and return its stdout. */
  exec(node: LabNode, command: string, args: readonly string[], input?: string): string {
    this.#checkAlive()
    return nsExec(node.ns, command, args, input)
  }

  /** The router's conntrack table (`conntrack -L`), one entry per line. */
  conntrack(router: LabRouter): string[] {
    return this.exec(router, 'conntrack', ['-L'])
      .split('\n')
      .filter((line) => line.trim() !== '')
  }

  /** Forget every NAT mapping of `router` (`conntrack -F`), as if it timed them out. */
  flushConntrack(router: LabRouter): void {
    this.exec(router, 'conntrack', ['-F'])
  }

  /** While `blocked`, `router` drops what its LAN sends to `ip` (to TCP `port` only, if given). */
  blockForwarding(router: LabRouter, ip: string, blocked: boolean, port?: number): void {
    this.#checkAlive()
    blockForwardingTo(router, ip, blocked, port)
  }

  /** While `on`, `router` sends what its LAN addresses to its public address to `host` (NAT loopback). */
  hairpin(router: LabRouter, host: LabHost, on: boolean): void {
    this.#checkAlive()
    hairpinThrough(router, host.ip, on)
  }

  /** While `dropped`, `router` forwards no UDP (QUIC cannot pass; TCP still does). */
  dropUdp(router: LabRouter, dropped: boolean): void {
    this.#checkAlive()
    dropUdpThrough(router, dropped)
  }

  /** Forgets `router`'s NAT mappings of connections opened towards `ip` (`conntrack -D --orig-dst`). */
  forgetConntrackTo(router: LabRouter, ip: string): void {
    try {
      this.exec(router, 'conntrack', ['-D', '--orig-dst', ip])
    } catch (err) {
      // conntrack exits 1 when nothing matched
      if (!(err instanceof LabCommandError && /0 flow entries/.test(err.stderr))) throw err
    }
  }

  /** Counts the bytes `router` forwards from `ip` from now on; call the result to read them. */
  countForwardedFrom(router: LabRouter, ip: string): () => number {
    this.#checkAlive()
    return countForwardedFrom(router, ip)
  }

  /**
   * Simulate a router reboot: links down (in-flight packets are lost), conntrack
   * flushed, rules reloaded, links up. Hosts keep their addresses and sockets.
   */
  restartRouter(router: LabRouter): void {
    this.#checkAlive()
    run('ip', ['-n', router.ns, 'link', 'set', 'wan', 'down'])
    run('ip', ['-n', router.ns, 'link', 'set', 'lan', 'down'])
    nsExec(router.ns, 'conntrack', ['-F'])
    const dmz = this.#lanHosts.get(router.name)?.[0]?.ip ?? null
    loadRouterRules(router, dmz)
    run('ip', ['-n', router.ns, 'link', 'set', 'lan', 'up'])
    run('ip', ['-n', router.ns, 'link', 'set', 'wan', 'up'])
  }

  /** Names of this lab's namespaces that currently exist. */
  namespaces(): string[] {
    const prefix = `${this.runId}-`
    return listNamespaces().filter((ns) => ns.startsWith(prefix))
  }

  /**
   * Kill every process started in the lab and remove all its namespaces (and so
   * all veths and bridges). Synchronous so it can run from an exit hook;
   * idempotent.
   */
  destroy(): void {
    if (this.#destroyed) return
    this.#destroyed = true
    liveLabs.delete(this)
    for (const proc of this.#processes) proc.kill()
    this.#processes.clear()
    for (const ns of [...this.#namespaces].reverse()) removeNamespace(ns)
  }

  [Symbol.dispose](): void {
    this.destroy()
  }

  #checkName(name: string): void {
    if (!NAME_RE.test(name)) throw new Error(`lab node names are [a-z][a-z0-9]{0,11}, got "${name}"`)
    if (this.#routers.has(name) || this.#hosts.has(name)) throw new Error(`lab node "${name}" exists already`)
  }

  #checkAlive(): void {
    if (this.#destroyed) throw new Error(`lab ${this.runId} was destroyed`)
  }

  #addNamespace(ns: string): void {
    this.#checkAlive()
    // Recorded before creation so a failure half-way is still cleaned up.
    this.#namespaces.push(ns)
    run('ip', ['netns', 'add', ns])
    run('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
    // IPv6 autoconf and DAD only add noise here.
    nsExec(ns, 'sysctl', [
      '-q',
      '-w',
      'net.ipv6.conf.all.disable_ipv6=1',
      'net.ipv6.conf.default.disable_ipv6=1',
    ])
  }

  #attachPublic(ns: string, ifname: string, ip: string): void {
    const port = `v${this.#publicPorts++}`
    run('ip', ['-n', ns, 'link', 'add', ifname, 'type', 'veth', 'peer', 'name', port, 'netns', this.publicNs])
    run('ip', ['-n', this.publicNs, 'link', 'set', port, 'master', 'br0', 'up'])
    run('ip', ['-n', ns, 'addr', 'add', `${ip}/${PUBLIC_CIDR_BITS}`, 'dev', ifname])
    run('ip', ['-n', ns, 'link', 'set', ifname, 'up'])
  }
}
