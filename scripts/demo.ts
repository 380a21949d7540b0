/**
 * `npm run demo`: a whole fleet on loopback with temporary state. Starts a
 * coordinator and three agents as separate processes, builds an archive, deploys
 * it with live progress, shows the machines table and the verified audit log,
 * then stops everything and removes the state. Built on the test harness
 * (testkit/harness.ts), so the demo runs exactly what the integration tests run.
 */
import { makeArchive } from '../testkit/archives.ts'
import { deployArgs } from '../testkit/fleetmesh.ts'
import { run, runDemo, say, step } from './demo-kit.ts'

await runDemo(async (fleet) => {
  step(`fleet "test" created in ${fleet.dir} (admin keys, fleet root, coordinator identity)`)
  const coordinator = await fleet.startCoordinator()
  const ready = coordinator.events.find((e) => e.event === 'ready')
  say(`coordinator ${String(ready?.peerId)} listening on 127.0.0.1:${fleet.port}`)

  step('enrolling three agents (each a separate process with its own key and state)')
  for (const name of ['edge-1', 'edge-2', 'edge-3']) {
    const token = await fleet.token(name, ['demo'])
    const agent = fleet.startAgent(name, ['--token', token])
    await agent.waitFor((e) => e.event === 'connected', 30_000, `${name} connected`)
    say(`${name}: enrolled and connected (token ${token.slice(0, 24)}…)`)
  }
  await run(['--home', fleet.home, 'machines'])

  step('deploying an archive to tag "demo" (upload, sign, push, verify, apply, health check, confirm)')
  const archive = await makeArchive(fleet.dir, {
    version: 'hello-1',
    activate: 'echo "activated $FLEETMESH_GENERATION"',
  })
  const code =
    (await run([
      '--home',
      fleet.home,
      ...deployArgs(archive, 'tag:demo', 'hello-1', ['--health-check', './health', '--timeout', '2m']),
    ])) ?? 1

  step('the audit log, verified (hash chain and every signature)')
  await run(['--home', fleet.home, 'audit', '--verify', '--limit', '8'])
  return code
})
