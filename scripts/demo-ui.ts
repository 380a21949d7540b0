/**
 * `npm run demo:ui`: the dashboard on a live fleet. Starts a coordinator and
 * three agents on loopback with temporary state, deploys an archive, then runs
 * `fleetmesh ui` and prints its URL; it keeps running (open the URL, deploy
 * again from another terminal with the printed FLEETMESH_HOME) until Ctrl-C,
 * which stops every process and removes the state.
 */
import { makeArchive } from '../testkit/archives.ts'
import { startUi } from '../testkit/dashboard.ts'
import { deployArgs } from '../testkit/fleetmesh.ts'
import { run, runDemo, say, step } from './demo-kit.ts'

await runDemo(async (fleet) => {
  step(`fleet "test" created in ${fleet.dir}`)
  await fleet.startCoordinator()
  say(`coordinator listening on 127.0.0.1:${fleet.port}`)

  step('enrolling three agents (separate processes)')
  for (const [name, tag] of [
    ['edge-1', 'lab'],
    ['edge-2', 'lab'],
    ['edge-3', 'prod'],
  ] as const) {
    await fleet.enrollAgent(name, [tag])
    say(`${name} [${tag}]: enrolled and connected`)
  }

  step('deploying an archive to tag "lab"')
  const archive = await makeArchive(fleet.dir, {
    version: 'hello-1',
    activate: 'echo "activated $FLEETMESH_GENERATION"',
  })
  const code = await run([
    '--home',
    fleet.home,
    ...deployArgs(archive, 'tag:lab', 'hello-1', ['--timeout', '2m']),
  ])
  if (code !== 0) return code ?? 1

  step('the dashboard: fleetmesh ui')
  const ui = await startUi(fleet.home)
  fleet.procs.push(ui.proc)
  say(`\n  open ${ui.url}\n`)
  say('deploy from another terminal and watch the table move:')
  say(`  FLEETMESH_HOME=${fleet.home} fleetmesh deploy ${archive} --to all --generation hello-2`)
  say('Ctrl-C stops the dashboard, the agents and the coordinator, and removes the state.')
  await ui.proc.exited
  return 0
})
