#!/usr/bin/env node
// Thin launcher. It must parse on old Node too, so it is plain JavaScript: when the
// Node running it is older than 24 it re-executes itself with the Node that the
// project pins in node_modules, then loads the TypeScript CLI (Node 24 strips types).
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const major = Number(process.versions.node.split('.')[0])
if (major < 24) {
  const pinned = join(here, '..', 'node_modules', 'node', 'bin', 'node')
  if (!existsSync(pinned)) {
    console.error(
      `fleetmesh needs Node 24+; this is Node ${process.versions.node} and ${pinned} is missing (run npm ci).`,
    )
    process.exit(1)
  }
  const r = spawnSync(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
  })
  process.exit(r.status ?? 1)
}
const { main } = await import('./main.ts')
process.exitCode = await main(process.argv.slice(2))
