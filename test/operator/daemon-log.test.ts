/**
 * The daemons' levelled event log: `--json` lines carry level, at and event;
 * `--log-level warn` drops info events; the text form marks warnings. The
 * warning provoked is a coordinator's reservation on a relay nobody runs.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { daemonLog } from '../../net/daemon-log.ts'
import { type Event, freePort, Proc, runCli, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
let nowhere: string
beforeEach(async () => {
  fleet = await TestFleet.create()
  const relayId = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  nowhere = `/ip4/127.0.0.1/tcp/${await freePort()}/p2p/${relayId}`
})
afterEach(async () => {
  await fleet.stop()
})

function coordinator(args: string[]): Proc {
  const listen = `/ip4/127.0.0.1/tcp/${fleet.port}`
  const p = new Proc('coordinator', ['coordinator', '--state', fleet.coordState, '--listen', listen, ...args])
  fleet.procs.push(p)
  return p
}

const failedReservation = (e: Event) => e.event === 'reservation' && e.status === 'failed'

describe('daemon event log', () => {
  it('with --json --log-level warn prints warnings as JSON lines and no info events', async () => {
    const p = coordinator(['--json', '--log-level', 'warn', '--reserve-on', nowhere])
    const warning = await p.waitFor(failedReservation, 30_000, 'the failed reservation')
    expect(warning).toMatchObject({ level: 'warn', relay: nowhere })
    await p.kill()
    expect(p.events.length).toBeGreaterThan(0)
    for (const e of p.events) {
      expect(e.event).not.toBe('text') // every line parsed as JSON
      expect(e).toMatchObject({ level: expect.stringMatching(/^(warn|error)$/), event: expect.any(String) })
      expect(Number.isNaN(Date.parse(String(e.at)))).toBe(false)
    }
    expect(p.events.some((e) => e.event === 'ready')).toBe(false)
  })

  it('marks warnings in the text form and leaves info lines as they were', async () => {
    const p = coordinator(['--reserve-on', nowhere])
    const text = (prefix: string) => (e: Event) => e.event === 'text' && String(e.text).startsWith(prefix)
    await p.waitFor(text('coordinator for fleet "test" is up'), 30_000, 'the ready text')
    await p.waitFor(text(`warning: relay reservation on ${nowhere} failed`), 30_000, 'the warning')
  })

  it('refuses an unknown level', async () => {
    const r = await runCli(['relay', '--state', fleet.dir, '--log-level', 'loud'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('--log-level must be one of debug, info, warn, error, not "loud"')
  })

  it('writes debug lines only at debug level, and fields as key=value in text', () => {
    const lines: string[] = []
    const write = (line: string) => void lines.push(line)
    daemonLog({ json: false, write }).debug('probe', { n: 1 })
    daemonLog({ json: false, level: 'debug', write }).debug('probe', { n: 2, none: null, o: { a: 1 } })
    daemonLog({ json: false, write }).error('crashed', { why: 'disk' })
    expect(lines).toEqual(['probe n=2 o={"a":1}\n', 'error: crashed why=disk\n'])
  })
})
