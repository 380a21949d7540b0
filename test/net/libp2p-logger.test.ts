// The logger libp2p gets (net/libp2p-logger.ts): one shared disabled logger while
// DEBUG names nothing, so that a connection's and a stream's loggers cost nothing;
// libp2p's own, which logs what DEBUG names, once it does.
import { describe, expect, it } from 'vitest'
import { libp2pLogger } from '../../net/libp2p-logger.ts'

describe("libp2p's logger", () => {
  it('is disabled and shared while DEBUG is unset, its scopes and levels too', () => {
    const logger = libp2pLogger({})
    const a = logger.forComponent('libp2p:connection')
    expect(a.enabled).toBe(false)
    expect(logger.forComponent('libp2p:yamux')).toBe(a)
    expect(a.newScope('stream')).toBe(a)
    expect(() => {
      a('%p opened', 'peer')
      a.error('failed - %e', new Error('x'))
      a.trace('bytes')
    }).not.toThrow()
  })

  it("is libp2p's own once DEBUG is set: a component it names logs", () => {
    const logger = libp2pLogger({ DEBUG: 'libp2p:*' })
    expect(typeof logger.forComponent('libp2p:connection').newScope).toBe('function')
    expect(logger.forComponent('libp2p:connection')).not.toBe(
      libp2pLogger({}).forComponent('libp2p:connection'),
    )
  })
})
