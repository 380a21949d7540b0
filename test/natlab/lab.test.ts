// The lab must behave as labelled before anything is concluded from it: these
// tests observe mapping and filtering from processes on both sides of each NAT.

import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  canRunLab,
  cleanupStale,
  createLab,
  iptablesBackend,
  type Lab,
  type LabHost,
  type LabProcess,
  type LabRouter,
  ProbeTimeoutError,
} from '../../testkit/natlab/lab.ts'
import type { AcceptedEvent, Endpoint } from '../../testkit/natlab/probe/events.ts'
import {
  eventFor,
  listen,
  nextLine,
  observe,
  open,
  startObserver,
  startPuppet,
} from '../../testkit/natlab/probe/sock-client.ts'

const check = canRunLab()
if (!check.ok) console.warn(`NAT lab tests skipped: ${check.reason}`)

function netnsList(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((ns) => ns !== '')
}

/** `ip netns exec` enters the namespace and then execs: wait until it has. */
async function waitUntilInNamespace(ns: string, pid: number | undefined, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n')
    if (pids.includes(String(pid))) return
    await new Promise((resolve) => setImmediate(resolve))
  }
  throw new Error(`pid ${pid} did not enter ${ns} within ${timeoutMs} ms`)
}

describe.skipIf(!check.ok)('NAT lab', () => {
  let lab: Lab
  let home: LabRouter
  let cgn: LabRouter
  let cone: LabRouter
  let a: LabHost
  let s: LabHost
  let f: LabHost
  let outsider: LabHost
  let o1: Endpoint
  let o2: Endpoint
  let pa: LabProcess
  let ps: LabProcess
  let pf: LabProcess
  let px: LabProcess

  beforeAll(async () => {
    lab = createLab()
    console.log(`NAT lab ${lab.runId}: ${iptablesBackend()}`)
    home = lab.addRouter('home', { behaviour: 'eim' })
    cgn = lab.addRouter('cgn', { behaviour: 'symmetric' })
    cone = lab.addRouter('open', { behaviour: 'full-cone' })
    a = lab.addPrivateHost('a', home)
    s = lab.addPrivateHost('s', cgn)
    f = lab.addPrivateHost('f', cone)
    const obs1 = lab.addPublicHost('obs1')
    const obs2 = lab.addPublicHost('obs2')
    outsider = lab.addPublicHost('x')
    ;[o1, o2, pa, ps, pf, px] = await Promise.all([
      startObserver(lab, obs1),
      startObserver(lab, obs2),
      startPuppet(lab, a),
      startPuppet(lab, s),
      startPuppet(lab, f),
      startPuppet(lab, outsider),
    ])
  })

  afterAll(() => {
    if (lab === undefined) return
    const runId = lab.runId
    lab.destroy()
    expect(netnsList().filter((ns) => ns.startsWith(`${runId}-`))).toEqual([])
  })

  it('eim: one local port to two observers maps to one external port, the same number', async () => {
    const seen1 = await observe(pa, 'eim1', o1, 40001)
    const seen2 = await observe(pa, 'eim2', o2, 40001)
    expect(seen1).toEqual({ address: home.publicIp, port: 40001 })
    expect(seen2).toEqual({ address: home.publicIp, port: 40001 })
  })

  it('symmetric: one local port to two observers maps to two different external ports', async () => {
    const seen1 = await observe(ps, 'sym1', o1, 40001)
    const seen2 = await observe(ps, 'sym2', o2, 40001)
    expect(seen1.address).toBe(cgn.publicIp)
    expect(seen2.address).toBe(cgn.publicIp)
    expect(seen1.port).not.toBe(seen2.port)
  })

  it('eim: unsolicited inbound to a mapped port is dropped, not answered', async () => {
    const mapped = await observe(pa, 'mapped', o1, 40002)
    expect(mapped.port).toBe(40002)
    // Even a listening socket behind the NAT is unreachable: there is no port forward.
    const listening = await listen(pa, 'srv', 5000)
    expect(listening.event).toBe('listening')

    const [toMapped, toListener] = await Promise.all([
      open(px, 'in1', mapped, { timeoutMs: 800 }),
      open(px, 'in2', { address: home.publicIp, port: 5000 }, { timeoutMs: 800 }),
    ])
    // A silent drop shows as no answer at all (our timeout), not ECONNREFUSED.
    expect(toMapped).toMatchObject({ event: 'error', code: 'ETIMEDOUT' })
    expect(toListener).toMatchObject({ event: 'error', code: 'ETIMEDOUT' })
    expect(pa.events.some((e) => e.event === 'accepted')).toBe(false)
  })

  it('full-cone: unsolicited inbound reaches the host behind the NAT', async () => {
    const mapped = await observe(pf, 'fc', o1, 40003)
    expect(mapped).toEqual({ address: cone.publicIp, port: 40003 })
    expect(await listen(pf, 'srv', 5000)).toMatchObject({ event: 'listening' })

    const toListener = await open(px, 'fc-in', { address: cone.publicIp, port: 5000 })
    expect(toListener.event).toBe('connected')
    const accepted = await pf.waitFor<AcceptedEvent>(eventFor('srv', 'accepted'))
    // The source address is preserved: the host sees the real remote.
    expect(accepted.address).toBe(outsider.ip)
    // The mapped port has no listener: the host's own kernel answers with RST.
    expect(await open(px, 'fc-in2', mapped)).toMatchObject({ event: 'error', code: 'ECONNREFUSED' })
  })

  it('flushConntrack: an established connection through the NAT stalls, a new one works', async () => {
    await observe(pa, 'old', o1, 40004)
    pa.send({ cmd: 'send', id: 'old', line: 'before' })
    expect(await nextLine(pa, 'old')).toBe('before')
    expect(lab.conntrack(home).some((line) => line.includes('sport=40004'))).toBe(true)

    lab.flushConntrack(home)

    expect(lab.conntrack(home).some((line) => line.includes('sport=40004'))).toBe(false)
    pa.send({ cmd: 'send', id: 'old', line: 'after' })
    // The NAT forgot the mapping and does not pick up mid-stream packets: the echo
    // never comes back. A bounded wait is the only way to observe a silent drop.
    await expect(nextLine(pa, 'old', 1_000)).rejects.toBeInstanceOf(ProbeTimeoutError)
    expect(lab.conntrack(home).some((line) => line.includes('sport=40004'))).toBe(false)

    const fresh = await observe(pa, 'new', o1)
    expect(fresh.address).toBe(home.publicIp)
    pa.send({ cmd: 'send', id: 'new', line: 'works' })
    expect(await nextLine(pa, 'new')).toBe('works')
    pa.send({ cmd: 'destroy', id: 'old' })
  })

  it('restartRouter: connections through the rebooted NAT stall, new ones get new mappings', async () => {
    const before = await observe(ps, 'old', o1, 40005)
    lab.restartRouter(cgn)
    ps.send({ cmd: 'send', id: 'old', line: 'after' })
    await expect(nextLine(ps, 'old', 1_000)).rejects.toBeInstanceOf(ProbeTimeoutError)

    const after = await observe(ps, 'new', o1, 40006)
    expect(after.address).toBe(cgn.publicIp)
    expect(after.port).not.toBe(before.port)
    ps.send({ cmd: 'send', id: 'new', line: 'works' })
    expect(await nextLine(ps, 'new')).toBe('works')
    ps.send({ cmd: 'destroy', id: 'old' })
  })
})

describe.skipIf(!check.ok)('NAT lab lifecycle', () => {
  it('destroy() kills the lab processes and removes every namespace', async () => {
    const lab = createLab()
    const r = lab.addRouter('r', { behaviour: 'eim' })
    const h = lab.addPrivateHost('h', r)
    lab.addPublicHost('p')
    const proc = await startPuppet(lab, h)
    expect(lab.namespaces()).toHaveLength(4)

    lab.destroy()

    expect(await proc.exited).toMatchObject({ signal: 'SIGKILL' })
    expect(netnsList().filter((ns) => ns.startsWith(`${lab.runId}-`))).toEqual([])
    expect(() => lab.addPublicHost('q')).toThrow(/destroyed/)
  })

  it('cleanupStale() removes namespaces (and what runs in them) left by a dead pid', async () => {
    // A pid that surely is not running any more: a process that just exited.
    const dead = spawnSync('true').pid
    expect(dead).toBeGreaterThan(0)
    const ns = `fm-${dead}-0-net`
    execFileSync('ip', ['netns', 'add', ns])
    execFileSync('ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge'])
    // An orphan still running inside it, as after a SIGKILLed test run.
    const orphan = spawn('ip', ['netns', 'exec', ns, 'sleep', '60'], { stdio: 'ignore' })
    const orphanExit = once(orphan, 'exit')
    await waitUntilInNamespace(ns, orphan.pid)

    const removed = cleanupStale()

    // A lab created concurrently by another test file may have swept it first.
    expect(Array.isArray(removed)).toBe(true)
    expect(netnsList()).not.toContain(ns)
    expect(await orphanExit).toEqual([null, 'SIGKILL'])
  })
})
