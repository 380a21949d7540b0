/**
 * `npm run demo:nixos`: NixOS system closures deployed to a fleet on loopback,
 * with temporary state and the local Nix. Starts a coordinator and three agents
 * (`--activator nixos`, each with its own profile under the temporary
 * directory, never this machine's system profile), builds fake system closures
 * (testkit/nix/fake-system.nix), installs a base system everywhere, then deploys
 * one closure per machine with `--nix-map` and a health check. The new system
 * of edge-3 is built with a broken web service: its health check fails and
 * edge-3 rolls back to the base system, while edge-1 and edge-2 commit.
 *
 * Needs root and Debian's nix-bin (like the NixOS tests); says so and exits 1
 * otherwise. The store paths it builds stay in /nix/store, garbage-collectable.
 */
import { spawn } from 'node:child_process'
import { chmod, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fleetmeshArgv } from '../testkit/fleetmesh.ts'
import { TestFleet } from '../testkit/harness.ts'
import { buildFakeSystem, closureOf, deleteFromStore, nixEnv, nixUnavailable } from '../testkit/nix/index.ts'

const MACHINES = ['edge-1', 'edge-2', 'edge-3'] as const
const BROKEN = 'edge-3'

const step = (msg: string) => process.stdout.write(`\n\x1b[1m== ${msg}\x1b[0m\n`)
const say = (msg: string) => process.stdout.write(`${msg}\n`)

function exec(command: string, argv: string[], env?: NodeJS.ProcessEnv): Promise<number | null> {
  return new Promise((resolve) =>
    spawn(command, argv, { stdio: 'inherit', ...(env ? { env } : {}) }).on('exit', resolve),
  )
}

/** `fleetmesh <args>` as a separate process, echoed without the --home of the temporary admin. */
function run(args: string[]): Promise<number | null> {
  say(`$ fleetmesh ${args.filter((a, i) => args[i - 1] !== '--home' && a !== '--home').join(' ')}`)
  return exec(process.execPath, fleetmeshArgv(args))
}

/** A Nix command, echoed and run with the demo's Nix settings (no sandbox, no nixbld group). */
function nix(argv: string[]): Promise<number | null> {
  say(`$ ${argv.join(' ')}`)
  return exec(argv[0] as string, argv.slice(1), nixEnv())
}

const unavailable = nixUnavailable()
if (unavailable !== undefined) {
  process.stderr.write(
    // nixUnavailable() words its reason for tests ("they need root …").
    `demo:nixos cannot use Nix here: ${unavailable.replace(/^they need /, 'it needs ')}.\n` +
      'Run it as root on a machine with nix-bin installed, or try "npm run demo" (archives, no Nix).\n',
  )
  process.exit(1)
}

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
const fleet = await TestFleet.create()
const profile = (m: string) => fleet.nixProfile(m)
let code = 1
try {
  step(`fleet "test" created in ${fleet.dir} (admin keys, fleet root, coordinator identity)`)
  const coordinator = await fleet.startCoordinator()
  const ready = coordinator.events.find((e) => e.event === 'ready')
  say(`coordinator ${String(ready?.peerId)} listening on 127.0.0.1:${fleet.port}`)

  step('a Nix binary cache key for this admin: it signs every closure pushed to the coordinator')
  await run(['--home', fleet.home, 'nix', 'keygen'])

  step('enrolling three NixOS agents (separate processes, each with its own key, state and Nix profile)')
  for (const m of MACHINES) {
    const agent = await fleet.startNixosAgent(m, await fleet.token(m, ['demo']))
    await agent.waitFor((e) => e.event === 'connected', 30_000, `${m} connected`)
    say(`${m}: enrolled and connected, activator nixos, profile ${profile(m)}`)
  }

  step('building fake system closures with the local Nix (no evaluation happens on the devices)')
  const base = await buildFakeSystem({ tag: `base-${RUN}`, deps: 2, shared: RUN })
  say(`${'base system'.padEnd(19)} ${base}`)
  const next = new Map<string, string>()
  for (const m of MACHINES) {
    const tag = m === BROKEN ? `web-2-${m}-port-clash-${RUN}` : `web-2-${m}-${RUN}`
    next.set(m, await buildFakeSystem({ tag, deps: 2, shared: RUN }))
    say(`${m} web-2 system ${next.get(m)}`)
  }

  step("pushing the closures into the coordinator's cache (signed with the admin's Nix key)")
  await run(['--home', fleet.home, 'nix', 'push', base, ...next.values()])
  // A real device has its own store; these agents share this machine's, so the closures are
  // deleted from it, and each agent has to fetch what it installs from the coordinator.
  const paths = [...new Set((await Promise.all([base, ...next.values()].map(closureOf))).flat())]
  say(`$ nix-store --delete <the ${paths.length} paths of these closures>`)
  await deleteFromStore(paths)
  say(
    "(the agents share this machine's Nix store: without the closures there, they fetch them over the mesh)",
  )

  step('installing the base system everywhere (fetch over the mesh, check signatures, switch, confirm)')
  await run(['--home', fleet.home, 'deploy', '--nix', base, '--to', 'tag:demo', '--mode', 'switch'])

  // The fake systems run no services, so the probe stands in for one: it reads the new
  // system's tag, and edge-3's was built with a port clash that keeps its web server down.
  const probe = join(fleet.dir, 'probe-web')
  await writeFile(
    probe,
    [
      '#!/bin/sh',
      '# stand-in for "curl -f http://localhost:8080/health" on the new system',
      'tag=$(cat "$FLEETMESH_GENERATION_DIR/tag")',
      'case "$tag" in',
      '  *port-clash*) echo "web service of $tag: nothing listens on :8080 (port clash)" >&2; exit 1 ;;',
      'esac',
      'echo "web service of $tag: up"',
      '',
    ].join('\n'),
  )
  await chmod(probe, 0o755)
  const map = join(fleet.dir, 'web-2.json')
  await writeFile(map, `${JSON.stringify(Object.fromEntries(next), null, 2)}\n`)

  step('deploying web-2: one closure per machine (--nix-map), each checked by a health probe')
  say(`$ cat ${map}\n${JSON.stringify(Object.fromEntries(next), null, 2)}`)
  say(`$ cat ${probe}`)
  await exec('cat', [probe])
  say(
    `Expected: edge-1 and edge-2 commit. ${BROKEN}'s web-2 system switches fine, but its web service never ` +
      `comes up, so the probe fails and ${BROKEN} rolls back to the base system (switched to again).`,
  )
  await run([
    '--home',
    fleet.home,
    'deploy',
    '--nix-map',
    map,
    '--mode',
    'switch',
    '--health-check',
    probe,
    '--health-retries',
    '1',
  ])

  step('the machines table')
  await run(['--home', fleet.home, 'machines'])

  step(`the update log of ${BROKEN}: switch-to-configuration output and why it rolled back`)
  await run(['--home', fleet.home, 'log', BROKEN])

  step("each agent's Nix profile: edge-1 and edge-2 on generation 2, edge-3 back on 1 (its failed 2 deleted)")
  for (const m of MACHINES) await nix(['nix-env', '--profile', profile(m), '--list-generations'])

  step('the audit log, verified (hash chain and every signature)')
  await run(['--home', fleet.home, 'audit', '--verify', '--limit', '10'])

  const states = await Promise.all(
    MACHINES.map(async (m) => [m, (await fleet.json<{ state: string | null }>(['log', m])).state] as const),
  )
  const wrong = states.filter(([m, s]) => s !== (m === BROKEN ? 'rolled-back' : 'committed'))
  if (wrong.length === 0) {
    code = 0
    say(
      `\nas expected: ${MACHINES.filter((m) => m !== BROKEN).join(' and ')} committed, ${BROKEN} rolled back`,
    )
  } else {
    process.stderr.write(
      `\nunexpected outcome: ${wrong.map(([m, s]) => `${m} is ${s ?? 'unknown'}`).join(', ')}\n`,
    )
  }
} catch (err) {
  process.stderr.write(`demo failed: ${(err as Error).message}\n`)
} finally {
  step('stopping processes and removing temporary state (the store paths stay, garbage-collectable)')
  await fleet.stop()
  await rm(fleet.dir, { recursive: true, force: true })
}
process.exit(code)
