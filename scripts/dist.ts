/**
 * `npm run dist [-- --out <dir>]`: the release tarball that operators and
 * devices install, `dist/fleetmesh-<version>-linux-<arch>.tar.gz`. It holds one
 * folder, `fleetmesh-<version>/`, with everything `fleetmesh` needs at run time
 * and nothing else: the source folders the CLI loads, the production
 * node_modules (copied from this checkout's, so the build works offline), the
 * pinned Node 24 binary as `runtime/node`, and `bin/fleetmesh`, a POSIX sh entry
 * that runs the CLI on that binary. The machine it is unpacked on needs no npm,
 * no source tree and no system Node.
 *
 * It cannot be an npm package: Node refuses to strip the types of files under a
 * node_modules path, so `npm install -g` of the sources would not run.
 */
import { execFileSync, spawn } from 'node:child_process'
import { createWriteStream, existsSync, readFileSync } from 'node:fs'
import {
  chmod,
  copyFile,
  cp,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import {
  type CommandSpec,
  errorMessage,
  FLEETMESH_VERSION,
  formatHelp,
  HelpRequested,
  parseCommand,
  sha256File,
  str,
  UsageError,
} from '../lib/index.ts'

const ROOT = resolve(import.meta.dirname, '..')
/** The pinned runtime: the `node` devDependency installs the real Node binary here. */
const PINNED_NODE = join(ROOT, 'node_modules/node/bin/node')
/** Folders shipped besides the ones the CLI loads: the systemd units, so a device can install them. */
const EXTRA_FILES = ['packaging/systemd']
/** Used when neither SOURCE_DATE_EPOCH nor git gives a time: npm's own fixed date for packed files. */
const FALLBACK_EPOCH = 499162500
/**
 * The conditions Node matches when it loads a package (as `import` or
 * `require`). Custom ones such as zod's `@zod/source`, which points at .ts
 * files, need `--conditions`, which the entry never passes.
 */
const NODE_CONDITIONS = new Set(['node', 'import', 'require', 'module-sync', 'node-addons', 'default'])

const spec: CommandSpec = {
  name: 'dist',
  summary:
    'Build the self-contained release tarball (sources, production node_modules, the pinned Node 24) for this machine.',
  usage: 'npm run dist [-- --out <dir>]',
  options: {
    out: { type: 'string', value: '<dir>', description: 'where to write the tarball', default: 'dist' },
  },
  examples: ['npm run dist', 'npm run dist -- --out /tmp/release'],
}

class DistError extends Error {
  override name = 'DistError'
}

const progress = (line: string) => process.stdout.write(`dist: ${line}\n`)
const megabytes = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`

/** Top-level folders of every file bin/fleetmesh.js loads, following relative imports. */
export function runtimeFolders(root: string): string[] {
  const seen = new Set<string>()
  const stack = [join(root, 'bin/fleetmesh.js')]
  for (let file = stack.pop(); file !== undefined; file = stack.pop()) {
    if (seen.has(file)) continue
    seen.add(file)
    for (const m of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*['"](\.\.?\/[^'"]+)['"]/g)) {
      const target = resolve(dirname(file), m[1] as string)
      // a match inside a comment may name no file
      if (existsSync(target) && !relative(root, target).startsWith('..')) stack.push(target)
    }
  }
  return [...new Set([...seen].map((f) => relative(root, f).split(sep)[0] as string))].sort()
}

/**
 * The production packages installed in `root`/node_modules, as paths relative
 * to `root` (nested ones included), in the order npm lists them.
 */
function productionPackages(root: string): string[] {
  let listing: string
  try {
    listing = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    })
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? errorMessage(err)
    throw new DistError(
      `"npm ls --omit=dev" found problems in ${root}/node_modules:\n${stderr.trim()}\nRun npm ci first.`,
    )
  }
  return listing
    .split('\n')
    .map((line) => relative(root, line.trim()))
    .filter((path) => path.startsWith(`node_modules${sep}`))
}

/** Every file a package entry point (`main`, `exports`, `imports`) can load on plain Node. */
export function loadedTargets(value: unknown): string[] {
  if (typeof value === 'string') return [value]
  if (Array.isArray(value)) return value.flatMap(loadedTargets)
  if (value === null || typeof value !== 'object') return []
  const entries = Object.entries(value)
  // A subpath map ("./x", "#x") lists entry points; anything else is a condition map.
  if (entries.some(([key]) => key.startsWith('.') || key.startsWith('#')))
    return entries.flatMap(([, target]) => loadedTargets(target))
  const targets: string[] = []
  for (const [condition, target] of entries) {
    if (NODE_CONDITIONS.has(condition)) targets.push(...loadedTargets(target))
    if (condition === 'default') break
  }
  return targets
}

const isTypeScript = (path: string) => /\.[cm]?ts$/.test(path) && !/\.d\.[cm]?ts$/.test(path)

/** Entry points of the shipped packages that are TypeScript: Node would refuse to load them. */
function typeScriptEntries(tree: string, packages: readonly string[]): string[] {
  return packages.flatMap((pkg) => {
    const manifest = JSON.parse(readFileSync(join(tree, pkg, 'package.json'), 'utf8')) as Record<
      string,
      unknown
    >
    return loadedTargets([manifest.main, manifest.exports, manifest.imports].filter((v) => v !== undefined))
      .filter(isTypeScript)
      .map((target) => `${pkg}: ${target}`)
  })
}

/** The sh entry: runs the CLI on the Node in the same tree, found through any symlink to the entry. */
const ENTRY = `#!/bin/sh
# fleetmesh from a release tree: runs the CLI on the Node 24 shipped beside it
# (runtime/node), never on a system Node. Symlink it anywhere (/usr/bin/fleetmesh):
# it finds its tree through the link.
self=$(readlink -f -- "$0" 2>/dev/null) || self=$0
[ -n "$self" ] || self=$0
root=\${self%/*}/..
exec "$root/runtime/node" "$root/bin/fleetmesh.js" "$@"
`

function treeReadme(name: string, tarball: string, nodeVersion: string): string {
  return `${name}: fleet manager for devices behind NAT (coordinator, agent, relay and admin CLI).

This tree is self-contained: runtime/node is Node ${nodeVersion}, and bin/fleetmesh runs the CLI on it.
No system Node, npm or source checkout is needed.

Install (the same on an operator's machine and on a device):

  sudo tar -xzf ${tarball} -C /opt
  sudo ln -sf /opt/${name}/bin/fleetmesh /usr/bin/fleetmesh
  fleetmesh --version

systemd units for the daemons are in packaging/systemd/ (they run /usr/bin/fleetmesh):

  sudo install -m 0644 /opt/${name}/packaging/systemd/fleetmesh-agent.service /etc/systemd/system/
  sudo systemctl daemon-reload && sudo systemctl enable --now fleetmesh-agent

Flags for a daemon go into /etc/fleetmesh/<role>.env as FLEETMESH_ARGS=... (see the unit's comments).
`
}

/** The time every archived file gets: SOURCE_DATE_EPOCH, else the last commit's, else a fixed date. */
function archiveEpoch(root: string): number {
  const fromEnv = Number(process.env.SOURCE_DATE_EPOCH)
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv
  try {
    const fromGit = Number(
      execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: root, encoding: 'utf8' }),
    )
    if (Number.isInteger(fromGit) && fromGit > 0) return fromGit
  } catch {
    // not a git checkout (an exported source tree): the fixed date will do
  }
  return FALLBACK_EPOCH
}

/** Runs `command args` and returns its stdout, or fails naming the command and its output. */
function run(command: string, args: readonly string[], what: string): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (err) {
    const { stdout = '', stderr = '' } = err as { stdout?: string; stderr?: string }
    throw new DistError(`${what} failed: ${errorMessage(err)}\n${stdout}${stderr}`.trim())
  }
}

/** Writes `dir`/`name` as a gzipped tar with sorted entries, one mtime and root ownership. */
async function writeTarball(dir: string, name: string, target: string, epoch: number): Promise<void> {
  const tar = spawn(
    'tar',
    [
      '--sort=name',
      `--mtime=@${epoch}`,
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '--mode=u+rwX,go=rX',
      '-cf',
      '-',
      '-C',
      dir,
      name,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let stderr = ''
  tar.stderr.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  const exited = new Promise<number | null>((resolveExit, reject) => {
    tar.on('error', reject)
    tar.on('close', resolveExit)
  })
  // zlib's gzip header carries no file name and no time, so equal trees give equal bytes.
  await pipeline(tar.stdout, createGzip({ level: 6 }), createWriteStream(target))
  const code = await exited
  if (code !== 0) throw new DistError(`tar exited with ${code}: ${stderr.trim()}`)
}

/** The bytes of the files in a tree, for the progress lines. */
async function treeSize(dir: string): Promise<number> {
  let total = 0
  for (const path of await readdir(dir, { recursive: true })) total += (await lstat(join(dir, path))).size
  return total
}

async function build(outDir: string): Promise<void> {
  if (process.platform !== 'linux')
    throw new DistError(`the release tarball is built for Linux; this is ${process.platform}`)
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>
  const version = String(pkg.version)
  if (version !== FLEETMESH_VERSION)
    throw new DistError(
      `package.json says version ${version} but lib/version.ts says ${FLEETMESH_VERSION}; bump both to the same version`,
    )
  const nodeVersion = run(PINNED_NODE, ['--version'], `${PINNED_NODE} --version (run npm ci first)`).trim()
  if (!nodeVersion.startsWith('v24.'))
    throw new DistError(`${PINNED_NODE} is Node ${nodeVersion}, expected the pinned Node 24 (run npm ci)`)

  const name = `fleetmesh-${version}`
  const tarballName = `${name}-linux-${process.arch}.tar.gz`
  const target = join(outDir, tarballName)
  const folders = runtimeFolders(ROOT)
  const packages = productionPackages(ROOT)
  progress(`${name} for linux-${process.arch}, runtime Node ${nodeVersion}`)
  progress(`source folders the CLI loads: ${folders.join(' ')}`)

  await mkdir(outDir, { recursive: true })
  const staging = await mkdtemp(join(outDir, '.staging-'))
  try {
    const tree = join(staging, name)
    for (const path of [...folders, ...EXTRA_FILES])
      await cp(join(ROOT, path), join(tree, path), { recursive: true })
    // Each package without its own node_modules: the nested packages that are
    // production ones are in the list themselves, the rest must stay out.
    for (const path of packages) {
      const nested = join(ROOT, path, 'node_modules')
      await cp(join(ROOT, path), join(tree, path), {
        recursive: true,
        filter: (source) => source !== nested && !source.startsWith(`${nested}${sep}`),
      })
    }
    progress(
      `${packages.length} production packages: ${megabytes(await treeSize(join(tree, 'node_modules')))}`,
    )
    await mkdir(join(tree, 'runtime'))
    await copyFile(PINNED_NODE, join(tree, 'runtime/node'))
    await chmod(join(tree, 'runtime/node'), 0o755)
    progress(`runtime/node: ${megabytes((await stat(join(tree, 'runtime/node'))).size)}`)
    const { name: pkgName, description, type, license, engines, dependencies } = pkg
    const manifest = {
      name: pkgName,
      version,
      description,
      type,
      private: true,
      license,
      engines,
      dependencies,
    }
    await writeFile(join(tree, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`)
    await writeFile(join(tree, 'README'), treeReadme(name, tarballName, nodeVersion))
    await writeFile(join(tree, 'bin/fleetmesh'), ENTRY, { mode: 0o755 })

    const typeScript = typeScriptEntries(tree, packages)
    if (typeScript.length > 0)
      throw new DistError(
        `these package entry points are TypeScript, which Node will not load from node_modules:\n  ${typeScript.join('\n  ')}`,
      )
    // Loading the CLI loads every module it imports: a missing file or package fails here, not on a device.
    const smoke = run(join(tree, 'bin/fleetmesh'), ['--version'], `${name}/bin/fleetmesh --version`).trim()
    if (!smoke.includes(`node ${nodeVersion.slice(1)}`))
      throw new DistError(`${name}/bin/fleetmesh --version printed "${smoke}", not Node ${nodeVersion}`)
    progress(`checked: no package entry point is TypeScript; bin/fleetmesh --version: ${smoke}`)

    const partial = join(staging, tarballName)
    await writeTarball(staging, name, partial, archiveEpoch(ROOT))
    await rename(partial, target)
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
  const sha256 = await sha256File(target)
  await writeFile(`${target}.sha256`, `${sha256}  ${tarballName}\n`)
  const shown = relative(process.cwd(), target).startsWith('..') ? target : relative(process.cwd(), target)
  progress(`wrote ${shown}`)
  progress(`size ${megabytes((await stat(target)).size)}, sha256 ${sha256}`)
  progress(
    `install: sudo tar -xzf ${shown} -C /opt && sudo ln -sf /opt/${name}/bin/fleetmesh /usr/bin/fleetmesh`,
  )
}

async function main(argv: string[]): Promise<number> {
  try {
    const parsed = parseCommand(argv, spec)
    if (parsed.positionals.length > 0)
      throw new UsageError(`unexpected argument '${parsed.positionals[0]}'\nusage: ${spec.usage}`)
    await build(resolve(str(parsed, 'out') ?? join(ROOT, 'dist')))
    return 0
  } catch (err) {
    if (err instanceof HelpRequested) {
      process.stdout.write(`${err.text}\n`)
      return 0
    }
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n${formatHelp(spec)}\n`)
      return 2
    }
    process.stderr.write(`dist failed: ${errorMessage(err)}\n`)
    return 1
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2))
