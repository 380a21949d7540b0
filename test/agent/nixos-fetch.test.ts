/**
 * The nixos activator's fetch step, the parts that need no Nix: the order the
 * NARs of a closure are prefetched in.
 */
import { describe, expect, it } from 'vitest'
import { prefetchOrder } from '../../agent/nixos-fetch.ts'
import { STORE_DIR } from '../../protocol/narinfo.ts'
import { fakeNar } from './nix-fixtures.ts'

const base = (path: string) => path.slice(STORE_DIR.length + 1)

describe('prefetch order', () => {
  it('puts references before the paths that refer to them, as Nix substitutes them', () => {
    const leaf = fakeNar('leaf')
    const lib = fakeNar('lib', 3000, [base(leaf.info.storePath)])
    const tool = fakeNar('tool', 3000, [base(leaf.info.storePath), base(lib.info.storePath)])
    const top = fakeNar('top', 3000, [base(tool.info.storePath), base(lib.info.storePath)])
    // Self-references and references outside the plan (valid here already) are skipped.
    top.info.references.push(base(top.info.storePath), `${'0'.repeat(32)}-valid-here`)
    const order = prefetchOrder([top, tool, lib, leaf].map((n) => n.info)).map((i) => i.storePath)
    expect(order).toEqual([leaf, lib, tool, top].map((n) => n.info.storePath))
  })

  it('keeps every path once, cycles and unrelated paths included', () => {
    const a = fakeNar('a')
    const b = fakeNar('b', 3000, [base(a.info.storePath)])
    a.info.references.push(base(b.info.storePath))
    const lone = fakeNar('lone')
    const order = prefetchOrder([a, b, lone].map((n) => n.info))
    expect(order.map((i) => i.storePath).sort()).toEqual([a, b, lone].map((n) => n.info.storePath).sort())
    expect(order.at(-1)?.storePath).toBe(lone.info.storePath)
  })
})
