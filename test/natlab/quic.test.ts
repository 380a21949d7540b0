// QUIC beside TCP through NAT (issue 14, "QUIC"): a public coordinator that
// listens on both; an agent behind a NAT runs its control link over QUIC, and
// one behind a router that drops UDP falls back to TCP and connects. The time
// each took is printed, not asserted.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LabFleet, PORT } from '../../testkit/natlab/fleet-lab.ts'
import { canRunLab, createLab, type Lab } from '../../testkit/natlab/lab.ts'

const check = canRunLab()
if (!check.ok) console.warn(`QUIC lab tests skipped: ${check.reason}`)

describe.skipIf(!check.ok)('QUIC through NAT', () => {
  let lab: Lab
  let fleet: LabFleet
  const timings: string[] = []

  beforeAll(async () => {
    lab = createLab()
    const coordinator = lab.addPublicHost('coord')
    fleet = await LabFleet.create(lab, {
      name: 'quic',
      admin: lab.addPublicHost('admin'),
      coordinator,
      coordinatorAddrs: [`/ip4/${coordinator.ip}/tcp/${PORT}`, `/ip4/${coordinator.ip}/udp/${PORT}/quic-v1`],
    })
    await fleet.startCoordinator()
  }, 60_000)

  afterAll(async () => {
    lab?.destroy()
    await fleet?.remove()
    if (timings.length > 0) console.log(`QUIC lab timings:\n  ${timings.join('\n  ')}`)
  })

  it('an agent behind a NAT connects over QUIC', async () => {
    const home = lab.addRouter('home', { behaviour: 'eim' })
    const started = Date.now()
    const { connected } = await fleet.enrollAgent(lab.addPrivateHost('dev', home), 'dev-1')
    timings.push(
      `QUIC through an eim NAT: connected ${Date.now() - started} ms after start (${connected.addr})`,
    )
    expect(connected.path).toBe('direct')
    expect(String(connected.addr)).toContain('/quic-v1')
  }, 90_000)

  it('an agent behind a router that drops UDP falls back to TCP and connects', async () => {
    const office = lab.addRouter('office', { behaviour: 'eim' })
    lab.dropUdp(office, true)
    const started = Date.now()
    const { connected } = await fleet.enrollAgent(lab.addPrivateHost('desk', office), 'desk-1')
    timings.push(`UDP dropped: connected over TCP ${Date.now() - started} ms after start (${connected.addr})`)
    expect(connected.path).toBe('direct')
    expect(String(connected.addr)).toContain(`/tcp/${PORT}`)
    // and it works: a deploy goes through
    const deploy = await fleet.deploy('desk-1', 'v1')
    expect(deploy.code).toBe(0)
  }, 120_000)
})
