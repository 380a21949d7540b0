// Which addresses a host dials: another network's private addresses (learned
// from the DHT or identify) are refused, the LAN's and the operator's are not.
// A fake interface list stands in for the machine's.

import type { NetworkInterfaceInfo } from 'node:os'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { describe, expect, it } from 'vitest'
import { createHost, DialScope, isPrivateIp } from '../../net/index.ts'

const lan: NetworkInterfaceInfo[] = [
  {
    address: '127.0.0.1',
    netmask: '255.0.0.0',
    family: 'IPv4',
    mac: '',
    internal: true,
    cidr: '127.0.0.1/8',
  },
  {
    address: '192.168.1.23',
    netmask: '255.255.255.0',
    family: 'IPv4',
    mac: '02:00:00:00:00:01',
    internal: false,
    cidr: '192.168.1.23/24',
  },
]

describe('dial scope', () => {
  it('knows the private, carrier-grade NAT and link-local ranges', () => {
    for (const ip of [
      '10.2.0.10',
      '172.20.1.1',
      '192.168.7.1',
      '100.64.3.4',
      '169.254.1.1',
      'fd00::1',
      'fe80::1',
    ])
      expect(isPrivateIp(ip), ip).toBe(true)
    for (const ip of ['203.0.113.7', '172.32.0.1', '100.128.0.1', '127.0.0.1', '2001:db8::1'])
      expect(isPrivateIp(ip), ip).toBe(false)
  })

  it("refuses another network's private address, not the LAN's, a public one, loopback or a name", () => {
    const scope = new DialScope({ interfaces: () => lan })
    const denies = (a: string) => scope.denies(multiaddr(a))
    // what an agent learned from the DHT: the coordinator's address on its own LAN
    expect(denies('/ip4/10.2.0.10/tcp/4001')).toBe(true)
    expect(denies('/ip4/100.64.0.5/tcp/4001')).toBe(true)
    expect(denies('/ip4/192.168.2.10/tcp/4001')).toBe(true)
    // same subnet as one of ours: the LAN case
    expect(denies('/ip4/192.168.1.40/tcp/4001')).toBe(false)
    expect(denies('/ip4/203.0.113.7/tcp/4001')).toBe(false)
    expect(denies('/ip4/127.0.0.1/tcp/4001')).toBe(false)
    expect(denies('/dns4/coordinator.example.net/tcp/4001')).toBe(false)
    // a relay circuit through a public relay: the relay's address is what is dialled
    expect(
      denies(
        '/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWPYiruFWZQ6yktgNyzj84YXUVMvD7PVa4wvUjdfxvVbdG/p2p-circuit',
      ),
    ).toBe(false)
    expect(scope.denied).toBe(3)
  })

  it('lets through what the operator named (a routed or VPN network)', () => {
    const scope = new DialScope({ interfaces: () => lan, allow: ['/ip4/10.8.0.1/tcp/4001'] })
    scope.allow([multiaddr('/ip4/100.64.9.9/tcp/4001')])
    expect(scope.denies(multiaddr('/ip4/10.8.0.1/tcp/4001'))).toBe(false)
    expect(scope.denies(multiaddr('/ip4/100.64.9.9/tcp/4001'))).toBe(false)
    expect(scope.denies(multiaddr('/ip4/10.8.0.2/tcp/4001'))).toBe(true)
  })

  it('lets through, for a while, the LAN addresses a peer behind our own public address offered', () => {
    const scope = new DialScope({ interfaces: () => lan })
    const coordinatorOnOtherSubnet = multiaddr('/ip4/192.168.2.10/tcp/4001')
    expect(scope.denies(coordinatorOnOtherSubnet, 1_000)).toBe(true)
    scope.allowLan(['192.168.2.10'], 1_000, 60_000)
    expect(scope.denies(coordinatorOnOtherSubnet, 2_000)).toBe(false)
    expect(scope.denies(multiaddr('/ip4/192.168.2.11/tcp/4001'), 2_000)).toBe(true) // only what was offered
    expect(scope.denies(coordinatorOnOtherSubnet, 61_001)).toBe(true) // and only for a while
    // bounded: a stream of offers keeps the newest 256 addresses
    for (let i = 0; i < 300; i++) scope.allowLan([`10.9.${i >> 8}.${i & 255}`], 70_000, 60_000)
    expect(scope.denies(multiaddr('/ip4/10.9.0.0/tcp/1'), 70_001)).toBe(true)
    expect(scope.denies(multiaddr('/ip4/10.9.1.43/tcp/1'), 70_001)).toBe(false)
  })

  it("a host with a scope does not dial another network's private address", async () => {
    const host = await createHost({
      role: 'agent',
      privateKey: await generateKeyPair('Ed25519'),
      dialScope: new DialScope({ interfaces: () => lan }),
    })
    try {
      // never leaves the machine: the gater refuses before any SYN
      await expect(
        host.dial(
          multiaddr('/ip4/10.2.0.10/tcp/4001/p2p/12D3KooWPYiruFWZQ6yktgNyzj84YXUVMvD7PVa4wvUjdfxvVbdG'),
        ),
      ).rejects.toMatchObject({ name: 'DialDeniedError' })
    } finally {
      await host.stop()
    }
  })
})
