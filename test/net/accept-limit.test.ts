/**
 * `--max-accepts-per-ip` on the coordinator and the relay: validated and
 * documented by the command line, and applied by libp2p to new inbound
 * connections from one IP address (real TCP connections from 127.0.0.1).
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, describe, expect, it } from 'vitest'
import { startCoordinator } from '../../coordinator/daemon.ts'
import { createHost, type FleetHost } from '../../net/host.ts'
import { runCli, TestFleet } from '../../testkit/harness.ts'

const cleanup: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

describe('--max-accepts-per-ip', () => {
  it('is refused unless a whole number from 1 to 100000, naming the option, before anything starts', async () => {
    for (const [command, value] of [
      ['coordinator', '0'],
      ['relay', 'many'],
      ['relay', '100001'],
    ] as const) {
      const out = await runCli([command, '--state', '/nonexistent/never', '--max-accepts-per-ip', value])
      expect(out.code, out.stderr).toBe(2)
      expect(out.stderr).toContain(
        `--max-accepts-per-ip must be a whole number from 1 to 100000, got "${value}"`,
      )
    }
  })

  it('is documented with its default in both daemons’ help', async () => {
    for (const command of ['coordinator', 'relay']) {
      const out = await runCli([command, '--help'])
      expect(out.stdout).toMatch(/--max-accepts-per-ip N\s+new inbound connections accepted per second/)
      expect(out.stdout).toContain('500')
    }
  })

  it('refuses connections past the limit from one address', async () => {
    const fleet = await TestFleet.create()
    cleanup.push(() => fleet.stop())
    const running = await startCoordinator({
      stateDir: fleet.coordState,
      listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
      maxAcceptsPerIp: 1,
    })
    cleanup.push(() => running.stop())
    const addr = multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}/p2p/${running.host.peerId}`)
    const peers: FleetHost[] = []
    for (let i = 0; i < 6; i++) {
      const peer = await createHost({
        role: 'admin',
        privateKey: await generateKeyPair('Ed25519'),
        listen: [],
      })
      cleanup.push(async () => {
        await peer.stop()
      })
      peers.push(peer)
    }
    // All at once: one a second gets in, the others (well within that second) are refused.
    const dials = await Promise.allSettled(peers.map((p) => p.dial(addr)))
    const accepted = dials.filter((d) => d.status === 'fulfilled').length
    expect(accepted).toBeGreaterThan(0)
    expect(accepted).toBeLessThan(peers.length)
  })

  it('is checked by the host factory too', async () => {
    const privateKey = await generateKeyPair('Ed25519')
    await expect(createHost({ role: 'relay', privateKey, listen: [], maxAcceptsPerIp: 0 })).rejects.toThrow(
      'maxAcceptsPerIp must be a whole number >= 1, got 0',
    )
  })
})
