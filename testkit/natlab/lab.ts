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

import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

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

export type LabCheck = { ok: true } | { ok: false; reason: string }

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

export interface ProbeEvent {
  readonly event: string
  readonly [key: string]: unknown
}

export interface ProcessExit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Name used in errors; defaults to `<host>:<command basename>`. */
  label?: string
}

export class LabCommandError extends Error {
  override readonly name = 'LabCommandError'
  readonly command: string
  readonly stderr: string

  constructor(command: string, stderr: string, cause: unknown) {
    super(`NAT lab command failed: ${command}\n${stderr.trim()}`, { cause })
    this.command = command
    this.stderr = stderr
  }
}

export class ProbeTimeoutError extends Error {
  override readonly name = 'ProbeTimeoutError'
}

export class ProbeExitedError extends Error {
  override readonly name = 'ProbeExitedError'
}

const PUBLIC_NET = '203.0.113'
const PUBLIC_CIDR_BITS = 24
const NAME_RE = /^[a-z][a-z0-9]{0,11}$/
const NS_RE = /^fm-(\d+)-/

const PROBE_DIR = fileURLToPath(new URL('./probe/', import.meta.url))

/** Absolute path of a script in test/natlab/probe/. */
export function probePath(script: string): string {
  return `${PROBE_DIR}${script}`
}

function errorStderr(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'stderr' in err) {
    const s = (err as { stderr: unknown }).stderr
    if (typeof s === 'string') return s
    if (Buffer.isBuffer(s)) return s.toString('utf8')
  }
  return err instanceof Error ? err.message : String(err)
}

function run(command: string, args: readonly string[], input?: string): string {
  try {
    return execFileSync(command, args, {
      input,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 20_000,
    })
  } catch (err) {
    throw new LabCommandError([command, ...args].join(' '), errorStderr(err), err)
  }
}

function runQuiet(command: string, args: readonly string[]): boolean {
  try {
    run(command, args)
    return true
  } catch {
    return false
  }
}

function nsExec(ns: string, command: string, args: readonly string[], input?: string): string {
  return run('ip', ['netns', 'exec', ns, command, ...args], input)
}

function listNamespaces(): string[] {
  return run('ip', ['netns', 'list'])
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name !== '')
}

/** Kill every process still inside `ns`, then remove it. Never throws. */
function removeNamespace(ns: string): void {
  try {
    const pids = run('ip', ['netns', 'pids', ns])
      .split('\n')
      .map((s) => Number(s.trim()))
      .filter((pid) => Number.isInteger(pid) && pid > 0)
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  } catch {
    // namespace already gone
  }
  runQuiet('ip', ['netns', 'del', ns])
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Remove `fm-<pid>-…` namespaces whose pid is no longer running (left by a run
 * that was SIGKILLed), with any processes still in them; their veths go with
 * them since both ends of every lab veth live in lab namespaces.
 * Returns the names removed.
 */
export function cleanupStale(): string[] {
  const removed: string[] = []
  let names: string[]
  try {
    names = listNamespaces()
  } catch {
    return removed
  }
  for (const ns of names) {
    const match = NS_RE.exec(ns)
    if (match === null) continue
    const pid = Number(match[1])
    if (pid === process.pid || pidAlive(pid)) continue
    removeNamespace(ns)
    removed.push(ns)
  }
  return removed
}

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
    nsExec(router.ns, iptables.restore, [], routerRules(router, null))
    nsExec(router.ns, 'sysctl', [
      '-q',
      '-w',
      'net.ipv4.ip_forward=1',
      `net.netfilter.nf_conntrack_tcp_loose=${router.tcpLoose ? 1 : 0}`,
    ])
    this.#routers.set(name, router)
    this.#lanHosts.set(name, [])
    return router
  }

  /** A host on `router`'s LAN, default route via the router. */
  addPrivateHost(name: string, router: LabRouter): LabHost {
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
    const index = lanHosts.length
    const host: LabHost = {
      kind: 'host',
      name,
      ns: `${this.runId}-h-${name}`,
      ip: `${router.lanPrefix}.${10 + index}`,
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
    run('ip', ['-n', host.ns, 'route', 'add', 'default', 'via', router.lanIp])
    lanHosts.push(host)
    this.#hosts.set(name, host)
    if (router.behaviour === 'full-cone') {
      nsExec(router.ns, iptables.restore, [], routerRules(router, host.ip))
    }
    return host
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
    nsExec(router.ns, iptables.restore, [], routerRules(router, dmz))
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

type Matcher = string | ((event: ProbeEvent) => boolean)

interface Waiter {
  matches: (event: ProbeEvent) => boolean
  resolve: (event: ProbeEvent) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

function toPredicate(match: Matcher): (event: ProbeEvent) => boolean {
  return typeof match === 'string' ? (event) => event.event === match : match
}

function isProbeEvent(value: unknown): value is ProbeEvent {
  return (
    typeof value === 'object' &&
    value !== null &&
    'event' in value &&
    typeof (value as { event: unknown }).event === 'string'
  )
}

/**
 * A process running in a lab namespace. Each stdout line that is a JSON object
 * with an `event` string is an event; {@link waitFor} takes the first one not yet
 * taken that matches, whether it arrived before or after the call.
 */
export class LabProcess {
  readonly child: ChildProcess
  readonly label: string
  readonly exited: Promise<ProcessExit>
  /** Every event received, in order (taken or not). */
  readonly events: ProbeEvent[] = []
  readonly #pending: ProbeEvent[] = []
  readonly #waiters: Waiter[] = []
  #stderr = ''
  #exit: ProcessExit | null = null

  constructor(child: ChildProcess, label: string) {
    this.child = child
    this.label = label
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-8_192)
    })
    // Writing to a probe that died must not crash the test process.
    child.stdin?.on('error', () => {})
    if (child.stdout !== null) {
      createInterface({ input: child.stdout }).on('line', (line) => this.#onLine(line))
    }
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.#exit = { code, signal }
        for (const waiter of this.#waiters.splice(0)) {
          clearTimeout(waiter.timer)
          waiter.reject(this.#exitedError())
        }
        resolve({ code, signal })
      })
      child.once('error', (err) => {
        this.#stderr += `\nspawn error: ${err.message}`
      })
    })
  }

  get stderr(): string {
    return this.#stderr
  }

  /**
   * Resolve with the first untaken event matching `match` (an event name or a
   * predicate). Rejects with {@link ProbeTimeoutError} after `timeoutMs`, or
   * {@link ProbeExitedError} if the process exits first.
   */
  waitFor<E extends ProbeEvent = ProbeEvent>(match: Matcher, timeoutMs = 10_000): Promise<E> {
    const matches = toPredicate(match)
    const index = this.#pending.findIndex(matches)
    if (index >= 0) {
      const [event] = this.#pending.splice(index, 1)
      return Promise.resolve(event as E)
    }
    if (this.#exit !== null) return Promise.reject(this.#exitedError())
    return new Promise<E>((resolve, reject) => {
      const waiter: Waiter = {
        matches,
        resolve: (event) => resolve(event as E),
        reject,
        timer: setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1)
          const what = typeof match === 'string' ? `"${match}"` : 'a matching event'
          reject(
            new ProbeTimeoutError(
              `${this.label} did not report ${what} within ${timeoutMs} ms${this.#stderrTail()}`,
            ),
          )
        }, timeoutMs),
      }
      this.#waiters.push(waiter)
    })
  }

  /** Write `message` as one JSON line to the process's stdin. */
  send(message: object): void {
    this.child.stdin?.write(`${JSON.stringify(message)}\n`)
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.#exit === null) this.child.kill(signal)
  }

  #onLine(line: string): void {
    let parsed: unknown
    try {
      parsed = JSON.parse(line)
    } catch {
      return
    }
    if (!isProbeEvent(parsed)) return
    this.events.push(parsed)
    const waiter = this.#waiters.find((w) => w.matches(parsed))
    if (waiter === undefined) {
      this.#pending.push(parsed)
      return
    }
    this.#waiters.splice(this.#waiters.indexOf(waiter), 1)
    clearTimeout(waiter.timer)
    waiter.resolve(parsed)
  }

  #exitedError(): ProbeExitedError {
    const exit = this.#exit
    const how = exit === null ? 'exited' : `exited (code ${exit.code}, signal ${exit.signal})`
    return new ProbeExitedError(`${this.label} ${how} before the awaited event${this.#stderrTail()}`)
  }

  #stderrTail(): string {
    const tail = this.#stderr.trim().split('\n').slice(-10).join('\n')
    return tail === '' ? '' : `\nstderr:\n${tail}`
  }
}
