// The one parser for addresses people give fleetmesh: every form the README
// shows is accepted, and every bad one is refused with an error that names
// where it came from, the value and what is expected, where @multiformats/
// multiaddr either accepts it or says only "Value must be an integer".
import { multiaddr } from '@multiformats/multiaddr'
import { describe, expect, it } from 'vitest'
import { PrivateKey } from '../../keys/index.ts'
import { UsageError } from '../../lib/index.ts'
import { AddressError, type AddressUse, checkAddresses, parseAddress } from '../../net/index.ts'

const RELAY = PrivateKey.generate().toPeerId().toString()
const PEER = PrivateKey.generate().toPeerId().toString()

function refusal(value: string, source: string, use: AddressUse = 'dial'): AddressError {
  try {
    parseAddress(value, source, use)
  } catch (err) {
    expect(err).toBeInstanceOf(AddressError)
    expect(err).toBeInstanceOf(UsageError)
    return err as AddressError
  }
  throw new Error(`${value} was accepted as a ${use} address`)
}

describe('parseAddress', () => {
  it('accepts the forms the README shows', () => {
    const dial = [
      '/ip4/203.0.113.7/tcp/4001',
      '/ip6/2001:db8::7/tcp/4001',
      '/dns4/coordinator.example.com/tcp/4001',
      '/dns6/coordinator.example.com/tcp/4001',
      '/dns/coordinator.example.com/tcp/65535',
      `/ip4/203.0.113.7/tcp/4001/p2p/${PEER}`,
      `/ip4/198.51.100.9/tcp/4001/p2p/${RELAY}/p2p-circuit`,
      `/ip4/198.51.100.9/tcp/4001/p2p/${RELAY}/p2p-circuit/p2p/${PEER}`,
    ]
    for (const a of dial) expect(parseAddress(a, '--coordinator').toString()).toBe(a)
    for (const a of ['/ip4/0.0.0.0/tcp/4001', '/ip4/127.0.0.1/tcp/0', '/ip6/::/tcp/4001'])
      expect(parseAddress(a, '--listen', 'listen').toString()).toBe(a)
    for (const a of [`/ip4/198.51.100.9/tcp/4001/p2p/${RELAY}`, `/dns4/relay/tcp/4001/p2p/${RELAY}`])
      expect(parseAddress(a, '--bootstrap', 'peer').toString()).toBe(a)
  })

  it('refuses what multiaddr() lets through or reports without context', () => {
    // why the helper exists: multiaddr() alone takes these, and libp2p fails on them later
    for (const a of ['/ip4/1.2.3.4/tcp/0', '/dns4/-bad-/tcp/1', '/ip4/1.2.3.4/tcp/1/p2p/abc'])
      expect(() => multiaddr(a)).not.toThrow()
    const cases: [value: string, reason: RegExp][] = [
      ['garbage', /must start with "\/"/],
      ['tcp/abc', /must start with "\/"/],
      ['/ip4/1.2.3.4/tcp/abc', /port "abc" is not a number from 1 to 65535/],
      ['/ip4/1.2.3.4/tcp/99999', /port "99999" is not a number from 1 to 65535/],
      ['/ip4/1.2.3.4/tcp/0', /port "0" is not a number from 1 to 65535/],
      ['/ip4/999.1.1.1/tcp/1', /"999.1.1.1" is not an IPv4 address/],
      ['/ip4/1.2.3/tcp/1', /"1.2.3" is not an IPv4 address/],
      ['/ip6/1.2.3.4/tcp/1', /not an IPv6 address/],
      ['/dns4/bad host/tcp/1', /not a DNS name/],
      ['/dns4/-bad-/tcp/1', /not a DNS name/],
      ['/ip4/1.2.3.4/udp/1', /"\/udp" where \/tcp belongs/],
      ['/ip4/1.2.3.4', /the \/tcp\/<port> part is missing/],
      ['/unix/x', /must start with \/ip4/],
      ['/ip4/1.2.3.4/tcp/1/', /unexpected "\/" after the port/],
      ['/ip4/1.2.3.4/tcp/1/ws', /unexpected "\/ws" after the port/],
      ['/ip4/1.2.3.4/tcp/1/p2p/abc', /"abc" is not a peer id/],
      ['/ip4/1.2.3.4/tcp/1/p2p', /\/p2p needs a peer id/],
      [`/ip4/1.2.3.4/tcp/1/p2p/${RELAY}/p2p-circuit/p2p/nope`, /"nope" is not a peer id/],
      [`/ip4/1.2.3.4/tcp/1/p2p/${RELAY}/p2p/${PEER}`, /unexpected/],
    ]
    for (const [value, reason] of cases) {
      const err = refusal(value, '--coordinator-addr')
      expect(err.message).toMatch(reason)
      expect(err.message).toContain(`--coordinator-addr "${value}" is not a valid address`)
      expect(err.message).toContain('expected /ip4|/ip6|/dns4|/dns6|/dns/<host>/tcp/<port 1-65535>')
      expect(err.source).toBe('--coordinator-addr')
    }
  })

  it('listen addresses: an IP, any port from 0, nothing after the port', () => {
    expect(refusal('/dns4/example.com/tcp/1', '--listen', 'listen').message).toMatch(
      /must start with \/ip4, \/ip6/,
    )
    expect(refusal(`/ip4/0.0.0.0/tcp/1/p2p/${PEER}`, '--listen', 'listen').message).toMatch(
      /a listen address ends after the port/,
    )
    expect(refusal('/ip4/0.0.0.0/tcp/65536', '--listen', 'listen').message).toMatch(/from 0 to 65535/)
  })

  it('peer addresses must name the peer', () => {
    const err = refusal('/ip4/198.51.100.9/tcp/4001', '--reserve-on', 'peer')
    expect(err.message).toMatch(/must end in \/p2p\/<peer id>/)
    expect(err.message).toContain('expected <address>/p2p/<peer id>')
    expect(
      refusal(`/ip4/198.51.100.9/tcp/4001/p2p/${RELAY}/p2p-circuit`, '--bootstrap', 'peer').message,
    ).toMatch(/must end in \/p2p\/<peer id>/)
  })
})

describe('checkAddresses', () => {
  it('returns the list unchanged, or names the bad entry by its index', () => {
    const good = ['/ip4/127.0.0.1/tcp/4001', '/dns4/c.example/tcp/4001']
    expect(checkAddresses(good, '--coordinator')).toEqual(good)
    const err = (() => {
      try {
        checkAddresses([...good, '/ip4/1.2.3.4/tcp/99999'], (i) => `fleet.json coordinator.addrs[${i}]`)
      } catch (e) {
        return e as AddressError
      }
      throw new Error('accepted')
    })()
    expect(err.message).toMatch(/^fleet\.json coordinator\.addrs\[2\] "\/ip4\/1\.2\.3\.4\/tcp\/99999"/)
  })
})
