/** Real libp2p hosts on loopback for the tests of the agent's protocol clients; stop them after each test. */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, type FleetHost } from '../../net/host.ts'

export interface LoopbackHosts {
  host(role: 'coordinator' | 'agent'): Promise<FleetHost>
  stopAll(): Promise<void>
}

export function loopbackHosts(): LoopbackHosts {
  const hosts: FleetHost[] = []
  return {
    async host(role) {
      const h = await createHost({
        role,
        privateKey: await generateKeyPair('Ed25519'),
        listen: ['/ip4/127.0.0.1/tcp/0'],
      })
      hosts.push(h)
      return h
    },
    async stopAll() {
      for (const h of hosts.splice(0).reverse()) await h.stop()
    },
  }
}
