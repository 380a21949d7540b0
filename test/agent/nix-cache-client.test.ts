/**
 * The agent's side of `/fleetmesh/nix/1` over real libp2p hosts on loopback:
 * a whole closure in one round trip, every frame checked, a cut stream retried,
 * and each kind of bad answer refused with an error that names what was wrong.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { meshNixCache, NixCacheError } from '../../agent/nix-cache-client.ts'
import { decodeMessage, encodeMessage } from '../../protocol/codec.ts'
import { handleFramed } from '../../protocol/framing.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import { formatNarInfo } from '../../protocol/narinfo.ts'
import { nixClosureFrameSchema, nixClosureRequestSchema } from '../../protocol/nix-cache.ts'
import { loopbackHosts } from './hosts.ts'
import { fakeNar } from './nix-fixtures.ts'

const { host, stopAll } = loopbackHosts()
afterEach(async () => {
  await stopAll()
})

const frame = (value: z.input<typeof nixClosureFrameSchema>) => encodeMessage(nixClosureFrameSchema, value)
/** Encodes anything, for frames the schema would refuse to send. */
const raw = (value: unknown) => encodeMessage(z.unknown(), value)

const dep = fakeNar('dep')
const top = fakeNar('system', 3000, [dep.info.storePath.slice('/nix/store/'.length)])
const lost = '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-lost'

/**
 * A coordinator that answers each closure request with the next list of frames
 * (the last list again once they run out); `null` cuts the stream instead.
 */
async function coordinatorAnswering(answers: (Uint8Array[] | null)[]) {
  const server = await host('coordinator')
  const agent = await host('agent')
  const requests: string[] = []
  await handleFramed(server, PROTOCOLS.nix, async (fs) => {
    const req = decodeMessage(nixClosureRequestSchema, await fs.readOne(), 'closure request', 4096)
    requests.push(req.storePath)
    const answer = answers[Math.min(requests.length, answers.length) - 1]
    if (answer === null || answer === undefined) {
      fs.abort(new Error('simulated cut'))
      return
    }
    for (const f of answer) await fs.send(f)
  })
  await agent.dial(server.getMultiaddrs()[0] as NonNullable<ReturnType<typeof server.getMultiaddrs>[0]>)
  const cache = meshNixCache(agent, server.peerId, {
    initialBackoffMs: 10,
    maxBackoffMs: 20,
    maxWaitMs: 5000,
  })
  return { cache, requests }
}

const closureOf = async (answers: (Uint8Array[] | null)[]) => {
  const { cache } = await coordinatorAnswering(answers)
  return cache.closure(top.info.storePath, AbortSignal.timeout(10_000))
}

const refusal = async (answer: Uint8Array[]) => {
  const err = await closureOf([answer]).catch((e: unknown) => e)
  expect(err).toBeInstanceOf(NixCacheError)
  return err as NixCacheError
}

describe('mesh nix cache client', () => {
  it('reads the narinfos of a closure and the paths the coordinator lacks', async () => {
    const withLost = fakeNar('system', 3000, [dep.info.storePath.slice(11), lost.slice(11)])
    const { cache, requests } = await coordinatorAnswering([
      [
        frame({ t: 'narinfo', narinfo: formatNarInfo(withLost.info) }),
        frame({ t: 'narinfo', narinfo: formatNarInfo(dep.info) }),
        frame({ t: 'end', paths: 2, missing: [lost] }),
      ],
    ])
    const closure = await cache.closure(withLost.info.storePath, AbortSignal.timeout(10_000))
    expect(requests).toEqual([withLost.info.storePath])
    expect(closure.narinfos).toEqual([withLost.info, dep.info])
    expect(closure.missing).toEqual([lost])
  })

  it('asks again when the stream is cut before the end', async () => {
    const good = [
      frame({ t: 'narinfo', narinfo: formatNarInfo(top.info) }),
      frame({ t: 'narinfo', narinfo: formatNarInfo(dep.info) }),
      frame({ t: 'end', paths: 2, missing: [] }),
    ]
    const { cache, requests } = await coordinatorAnswering([null, good])
    const closure = await cache.closure(top.info.storePath, AbortSignal.timeout(10_000))
    expect(closure.narinfos).toHaveLength(2)
    expect(requests).toHaveLength(2)
  })

  it('refuses a frame that does not decode, naming the frame', async () => {
    const err = await refusal([
      frame({ t: 'narinfo', narinfo: formatNarInfo(top.info) }),
      raw({ t: 'narinfo' }),
    ])
    expect(err.code).toBe('bad-frame')
    expect(err.message).toContain('closure frame 1')
  })

  it('refuses a narinfo that does not parse, naming the field', async () => {
    const broken = formatNarInfo(top.info).replace(/^NarHash: .*\n/m, '')
    const err = await refusal([frame({ t: 'narinfo', narinfo: broken })])
    expect(err.code).toBe('bad-frame')
    expect(err.message).toMatch(/closure frame 0: narinfo has no NarHash field/)
  })

  it('refuses an answer whose count, paths or references do not add up', async () => {
    const both = [
      frame({ t: 'narinfo', narinfo: formatNarInfo(top.info) }),
      frame({ t: 'narinfo', narinfo: formatNarInfo(dep.info) }),
    ]
    const cases: [Uint8Array[], RegExp][] = [
      [[...both, frame({ t: 'end', paths: 3, missing: [] })], /counts 3 narinfos, but 2 came/],
      [[both[0] as Uint8Array, both[0] as Uint8Array], /was sent twice/],
      [
        [both[0] as Uint8Array, frame({ t: 'end', paths: 1, missing: [] })],
        /refers to .*-dep, which the answer neither/,
      ],
      [[both[1] as Uint8Array, frame({ t: 'end', paths: 1, missing: [] })], /neither holds .*-system itself/],
    ]
    for (const [answer, message] of cases) {
      const err = await refusal(answer)
      expect(err.code, String(message)).toBe('bad-frame')
      expect(err.message).toMatch(message)
    }
  })

  it('passes on an error the coordinator answers with', async () => {
    const err = await refusal([
      frame({ t: 'error', error: { code: 'too-large', message: 'closure too large' } }),
    ])
    expect(err.code).toBe('cache-error')
    expect(err.message).toContain('too-large: closure too large')
  })
})
