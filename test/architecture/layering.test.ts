// The layering rule, checked: dependencies point one way,
// lib ← keys ← protocol ← net ← {coordinator, agent, relay, admin}, the roles
// never import each other, code outside a layer goes through the layer's
// index.ts, and nothing but tests imports test/. In the spirit of Tailscale's
// depaware/deps tests: the rule lives in code, so a wrong-way import fails CI
// instead of waiting for a reviewer to notice.
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

const ROOT = resolve(import.meta.dirname, '../..')

/** Layer folders by rank: a folder may import only folders of lower rank (and itself). */
const LAYERS = ['lib', 'keys', 'protocol', 'net'] as const
const ROLES = ['coordinator', 'agent', 'relay', 'admin'] as const
const ROLE_RANK = LAYERS.length

/** What each non-layer top folder may import, besides itself. */
const OTHERS: Record<string, readonly string[]> = {
  bin: [...LAYERS, ...ROLES],
  testkit: [...LAYERS, ...ROLES],
  bench: [...LAYERS, ...ROLES, 'testkit'],
  scripts: [...LAYERS, ...ROLES, 'testkit'],
  test: [...LAYERS, ...ROLES, 'testkit', 'bench', 'scripts', 'bin'],
}

/** Packages the bottom layer may use: it stays generic, with no libp2p or key code. */
const LIB_PACKAGES = /^(node:|zod$)/

/**
 * Files allowed past the size limit, each with the reason it stays whole. Keep
 * this list short: a long file is usually two modules.
 */
const SIZE_LIMIT = 450
const LARGE_FILES: Record<string, string> = {}

interface ImportEdge {
  /** Importing file, relative to the repository root */
  from: string
  /** The specifier as written */
  specifier: string
}

function rank(folder: string): number {
  const layer = (LAYERS as readonly string[]).indexOf(folder)
  if (layer >= 0) return layer
  if ((ROLES as readonly string[]).includes(folder)) return ROLE_RANK
  return -1
}

const topFolder = (path: string): string => path.split('/')[0] ?? path

/**
 * Every rule broken by one import, as a sentence naming the file, the import
 * and the rule. Pure, so the test below can feed it a deliberately reversed
 * import and see it caught.
 */
function layeringViolations(edge: ImportEdge): string[] {
  const fromTop = topFolder(edge.from)
  const where = `${edge.from} imports '${edge.specifier}'`
  if (!edge.specifier.startsWith('.')) {
    if (fromTop === 'lib' && !LIB_PACKAGES.test(edge.specifier))
      return [`${where}: lib/ may use only node: builtins and zod`]
    return []
  }
  const target = relative(ROOT, resolve(ROOT, dirname(edge.from), edge.specifier))
  const toTop = topFolder(target)
  if (toTop === fromTop) {
    if ((LAYERS as readonly string[]).includes(fromTop) && target === `${fromTop}/index.ts`)
      return [`${where}: inside ${fromTop}/ import the sibling file, not the folder's own index.ts (cycle)`]
    return []
  }
  const problems: string[] = []
  const fromRank = rank(fromTop)
  const toRank = rank(toTop)
  if (fromRank >= 0) {
    if (toRank < 0) problems.push(`${where}: ${fromTop}/ may import only lib, keys, protocol and net`)
    else if (fromRank === ROLE_RANK && toRank === ROLE_RANK)
      problems.push(
        `${where}: roles never import each other; move what they share below them (net, protocol…)`,
      )
    else if (toRank > fromRank)
      problems.push(`${where}: ${fromTop}/ is below ${toTop}/ (lib ← keys ← protocol ← net ← roles)`)
  } else {
    const allowed = OTHERS[fromTop]
    if (allowed === undefined)
      problems.push(`${where}: ${fromTop}/ is not a known folder; add it to the rule`)
    else if (!allowed.includes(toTop)) problems.push(`${where}: ${fromTop}/ may not import ${toTop}/`)
  }
  const throughIndex = fromTop === 'test' || !(LAYERS as readonly string[]).includes(toTop)
  if (!throughIndex && target !== `${toTop}/index.ts`)
    problems.push(`${where}: import ${toTop}/ through ${toTop}/index.ts, its public surface`)
  return problems
}

const SKIP = new Set(['node_modules', '.git', '.tmp', 'coverage'])

function sourceFiles(dir = ''): string[] {
  const out: string[] = []
  for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    if (SKIP.has(entry.name) || entry.name.startsWith('.')) continue
    const path = dir === '' ? entry.name : `${dir}/${entry.name}`
    if (entry.isDirectory()) out.push(...sourceFiles(path))
    else if (/\.(ts|js)$/.test(entry.name) && dir !== '') out.push(path)
  }
  return out
}

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\b[^'";]*?\bfrom\s*'([^']+)'|\bimport\s*\(\s*'([^']+)'\s*\)|(?:^|\n)\s*import\s+'([^']+)'/g

function importsOf(path: string, text: string): ImportEdge[] {
  // Doc comments carry usage examples with imports in them; they are not code.
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '')
  return [...code.matchAll(IMPORT)].map((m) => ({ from: path, specifier: (m[1] ?? m[2] ?? m[3]) as string }))
}

describe('layering', () => {
  const files = sourceFiles()

  it('finds the source tree', () => {
    for (const folder of [...LAYERS, ...ROLES])
      expect(files.some((f) => f.startsWith(`${folder}/`))).toBe(true)
  })

  it('no import crosses the layers the wrong way', () => {
    const problems = files.flatMap((f) =>
      importsOf(f, readFileSync(join(ROOT, f), 'utf8')).flatMap(layeringViolations),
    )
    expect(problems).toEqual([])
  })

  it('catches a reversed import, a role importing a role, a bypassed index and lib using libp2p', () => {
    const cases: [ImportEdge, RegExp][] = [
      [{ from: 'keys/identity.ts', specifier: '../net/index.ts' }, /keys\/ is below net\//],
      [{ from: 'lib/files.ts', specifier: '../keys/index.ts' }, /lib\/ is below keys\//],
      [{ from: 'protocol/envelope.ts', specifier: '../agent/verify.ts' }, /protocol\/ is below agent\//],
      [{ from: 'agent/daemon.ts', specifier: '../coordinator/store.ts' }, /roles never import each other/],
      [{ from: 'agent/link.ts', specifier: '../net/host.ts' }, /through net\/index\.ts/],
      [{ from: 'net/host.ts', specifier: './index.ts' }, /not the folder's own index/],
      [{ from: 'bench/fleet.ts', specifier: '../test/agent/fixtures.ts' }, /bench\/ may not import test\//],
      [{ from: 'coordinator/cli.ts', specifier: '../testkit/harness.ts' }, /may import only lib, keys/],
      [{ from: 'lib/sleep.ts', specifier: '@libp2p/interface' }, /only node: builtins and zod/],
    ]
    for (const [edge, expected] of cases) expect(layeringViolations(edge).join('\n')).toMatch(expected)
    expect(layeringViolations({ from: 'agent/link.ts', specifier: '../net/index.ts' })).toEqual([])
    expect(layeringViolations({ from: 'test/agent/link.test.ts', specifier: '../../agent/link.ts' })).toEqual(
      [],
    )
  })

  it('reads static, re-export, side-effect and dynamic imports but not examples in comments', () => {
    const text = [
      "/** import { x } from '../net/index.ts' */",
      "import { a } from './a.ts'",
      "import type {\n  B,\n} from '../b/index.ts'",
      "export * from './c.ts'",
      "import './d.ts'",
      "const e = await import('./e.ts')",
    ].join('\n')
    expect(importsOf('keys/x.ts', text).map((e) => e.specifier)).toEqual([
      './a.ts',
      '../b/index.ts',
      './c.ts',
      './d.ts',
      './e.ts',
    ])
  })

  it(`no source file outside test/ is over ${SIZE_LIMIT} lines unless listed with its reason`, () => {
    const large = files
      .filter((f) => !f.startsWith('test/'))
      .map((f) => ({ f, lines: readFileSync(join(ROOT, f), 'utf8').split('\n').length }))
      .filter(({ f, lines }) => lines > SIZE_LIMIT && LARGE_FILES[f] === undefined)
      .map(({ f, lines }) => `${f}: ${lines} lines`)
    expect(large).toEqual([])
  })
})
