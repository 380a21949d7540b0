// Two edges of a session's start. Reports the coordinator already holds when a
// session starts: their ack went with an earlier session (cut while moving to a direct connection, say), and
// the coordinator's hello names the highest seq it stored. The agent drops them
// from its outbox, and must count them as acknowledged like any other: the
// daemon logs `acked` from the link's ack, and whoever waits on it (the NAT
// bench, the tests' reportsAcked) waited forever before. And a stop that comes
// while a session is starting (dialled, hello not yet answered): the session
// went on once answered and the agent never exited. A fake coordinator
// (fake-coordinator.ts) and a real Outbox in a temporary directory.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { Outbox } from '../../agent/outbox.ts'
import { DOMAINS, PrivateKey } from '../../keys/index.ts'
import { sealEnvelope, statusReportSchema } from '../../protocol/index.ts'
import { sampleStatus } from '../../testkit/fixtures.ts'
import { fakeCoordinator, linkTo, nextFrame } from './fake-coordinator.ts'
import { loopbackHosts } from './hosts.ts'

const { host, stopAll } = loopbackHosts()
const cleanup: (() => Promise<void>)[] = []

afterEach(async () => {
  for (const done of cleanup.splice(0).reverse()) await done()
  await stopAll()
})

describe('agent control link, reports the coordinator already holds', () => {
  it("counts them as acknowledged when the coordinator's hello says it stored them", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fm-link-acks-'))
    cleanup.push(() => rm(dir, { recursive: true, force: true }))
    const key = PrivateKey.generate()
    const outbox = await Outbox.open(dir, { signer: key })
    await outbox.reconcile(0) // an earlier session agreed on the numbering: the coordinator had nothing yet
    for (const seq of [await outbox.nextSeq(), await outbox.nextSeq()])
      await outbox.enqueue(seq, sealEnvelope(statusReportSchema, DOMAINS.status, sampleStatus({ seq }), key))
    expect((await outbox.pending()).map((r) => r.seq)).toEqual([1, 2])

    // the coordinator stored both; the agent must send nothing of them again
    const { result, coordinator } = await fakeCoordinator(host, (fs) => nextFrame(fs), { lastAckedSeq: 2 })
    const acked: number[] = []
    const link = linkTo(await host('agent'), coordinator, {
      queue: {
        pending: () => outbox.pending(),
        ack: async (seq) => {
          await outbox.ack(seq)
          acked.push(seq)
        },
        reconcile: (stored) => outbox.reconcile(stored),
      },
    })
    cleanup.push(() => link.stop())
    link.start()
    await vi.waitFor(() => expect(acked).toEqual([2]), { timeout: 10_000 })
    expect(await outbox.pending()).toEqual([])
    await link.stop()
    expect(await result).toBeUndefined() // the stream ended with no report sent again
  })
})

describe('agent control link, stopped while a session starts', () => {
  it('ends that session too, even when the coordinator answers the hello afterwards', async () => {
    const helloSeen = Promise.withResolvers<void>()
    const answer = Promise.withResolvers<void>()
    const { result, coordinator } = await fakeCoordinator(
      host,
      (fs) => nextFrame(fs), // keeps the stream open until the agent ends it
      {},
      async () => {
        helloSeen.resolve()
        await answer.promise
      },
    )
    const link = linkTo(await host('agent'), coordinator)
    cleanup.push(() => link.stop())
    link.start()
    await helloSeen.promise
    const stopped = link.stop()
    answer.resolve() // the hello's answer arrives after the stop
    const outcome = await Promise.race([
      stopped.then(() => 'stopped'),
      new Promise((resolve) => setTimeout(resolve, 10_000, 'still running after 10 s').unref()),
    ])
    expect(outcome).toBe('stopped')
    await result.catch(() => undefined) // the stream ended, one way or another
  })
})
