/**
 * `npm run demo`: a whole fleet on loopback with temporary state. Starts a
 * coordinator and three agents as separate processes, builds an archive, deploys
 * it with live progress, shows the machines table and the verified audit log,
 * then stops everything and removes the state. Built on the test harness
 * (testkit/harness.ts), so the demo runs exactly what the integration tests run.
 */
import { spawn } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { makeArchive } from '../testkit/archives.ts'
import { deployArgs, fleetmeshArgv } from '../testkit/fleetmesh.ts'
import { TestFleet } from '../testkit/harness.ts'

const step = (msg: string) => process.stdout.write(`\n\x1b[1m== ${msg}\x1b[0m\n`)

function run(args: string[]): Promise<number | null> {
  process.stdout.write(
    `$ fleetmesh ${args.filter((a, i) => args[i - 1] !== '--home' && a !== '--home').join(' ')}\n`,
  )
  return new Promise((resolve) =>
    spawn(process.execPath, fleetmeshArgv(args), { stdio: 'inherit' }).on('exit', resolve),
  )
}

const fleet = await TestFleet.create()
let code = 1
try {
  step(`fleet "test" created in ${fleet.dir} (admin keys, fleet root, coordinator identity)`)
  const coordinator = await fleet.startCoordinator()
  const ready = coordinator.events.find((e) => e.event === 'ready')
  process.stdout.write(`coordinator ${String(ready?.peerId)} listening on 127.0.0.1:${fleet.port}\n`)

  step('enrolling three agents (each a separate process with its own key and state)')
  for (const name of ['edge-1', 'edge-2', 'edge-3']) {
    const token = await fleet.token(name, ['demo'])
    const agent = fleet.startAgent(name, ['--token', token])
    await agent.waitFor((e) => e.event === 'connected', 30_000, `${name} connected`)
    process.stdout.write(`${name}: enrolled and connected (token ${token.slice(0, 24)}…)\n`)
  }
  await run(['--home', fleet.home, 'machines'])

  step('deploying an archive to tag "demo" (upload, sign, push, verify, apply, health check, confirm)')
  const archive = await makeArchive(fleet.dir, {
    version: 'hello-1',
    activate: 'echo "activated $FLEETMESH_GENERATION"',
  })
  code =
    (await run([
      '--home',
      fleet.home,
      ...deployArgs(archive, 'tag:demo', 'hello-1', ['--health-check', './health', '--timeout', '2m']),
    ])) ?? 1

  step('the audit log, verified (hash chain and every signature)')
  await run(['--home', fleet.home, 'audit', '--verify', '--limit', '8'])
} catch (err) {
  process.stderr.write(`demo failed: ${(err as Error).message}\n`)
} finally {
  step('stopping processes and removing temporary state')
  await fleet.stop()
  await rm(fleet.dir, { recursive: true, force: true })
}
process.exit(code)
