#!/usr/bin/env node
// Thin launcher. It must parse on old Node too, so it is plain JavaScript: when the
// Node running it is older than 24 it re-executes itself with the Node that the
// project pins in node_modules, then loads the TypeScript CLI (Node 24 strips types).
//
// The re-executed child is the real daemon, so the launcher stands in for it:
// it forwards SIGTERM/SIGINT/SIGHUP, and ends the way the child ended (its exit
// code, or the same signal). The child runs in its own process group, so a
// Ctrl-C from the terminal reaches it once (through the launcher), not twice; and
// it watches its parent, so a launcher killed with SIGKILL does not leave it
// running under PID 1.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import * as nodeModule from 'node:module'
import { constants, homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const major = Number(process.versions.node.split('.')[0])
const FORWARDED = ['SIGTERM', 'SIGINT', 'SIGHUP']
/** How often the child checks that its launcher is still there. */
const WATCH_PARENT_MS = 500
/** After asking itself to stop because the launcher is gone, how long the child waits before exiting hard. */
const ORPHAN_GRACE_MS = 10_000

if (major < 24) {
  const pinned = join(here, '..', 'node_modules', 'node', 'bin', 'node')
  if (!existsSync(pinned)) {
    console.error(
      `fleetmesh needs Node 24+; this is Node ${process.versions.node} and ${pinned} is missing (run npm ci).`,
    )
    process.exit(1)
  }
  const child = spawn(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    detached: true,
    env: { ...process.env, FLEETMESH_LAUNCHER_PID: String(process.pid) },
  })
  const forward = (signal) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  }
  for (const signal of FORWARDED) process.on(signal, forward)
  child.on('error', (err) => {
    console.error(`fleetmesh: could not start ${pinned}: ${err.message}`)
    process.exit(1)
  })
  child.on('exit', (code, signal) => {
    if (signal !== null) {
      // End by the same signal, so whoever waits for us sees what the daemon saw.
      for (const s of FORWARDED) process.removeAllListeners(s)
      try {
        process.kill(process.pid, signal)
      } catch {
        // an unknown signal name: fall through to the shell's convention
      }
      process.exit(128 + (constants.signals[signal] ?? 0))
    }
    process.exit(code ?? 1)
  })
} else {
  const launcher = Number(process.env.FLEETMESH_LAUNCHER_PID)
  if (Number.isInteger(launcher) && launcher > 0) {
    delete process.env.FLEETMESH_LAUNCHER_PID
    watchLauncher(launcher)
  }
  // V8's code cache for fleetmesh's and libp2p's modules: without it a command
  // spends about half of its start-up CPU compiling them again (measured: 1.35 s
  // user time down to 0.6 s for --version). Per user, not in the shared /tmp a
  // root daemon would then trust; NODE_COMPILE_CACHE overrides, and
  // NODE_DISABLE_COMPILE_CACHE=1 turns it off. A cache that cannot be written is
  // skipped by Node, never an error.
  if (process.env.NODE_COMPILE_CACHE === undefined) {
    const cacheHome = process.env.XDG_CACHE_HOME || join(homedir(), '.cache')
    // a namespace import: old Node, which must still parse this file, has no such export
    nodeModule.enableCompileCache(join(cacheHome, 'fleetmesh', 'node-compile-cache'))
  }
  const { main } = await import('./main.ts')
  process.exitCode = await main(process.argv.slice(2))
}

/** Stops this process (gracefully first: daemons stop on SIGTERM) once the launcher `pid` is gone. */
function watchLauncher(pid) {
  const timer = setInterval(() => {
    if (process.ppid === pid) return
    clearInterval(timer)
    process.kill(process.pid, 'SIGTERM')
    setTimeout(() => process.exit(1), ORPHAN_GRACE_MS).unref()
  }, WATCH_PARENT_MS)
  timer.unref()
}
