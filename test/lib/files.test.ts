import { readdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import {
  PersistError,
  readJson,
  readJsonIfExists,
  removeStaleTemps,
  serialiser,
  writeFileAtomic,
  writeJsonAtomic,
} from '../../lib/index.ts'
import { removeDir, tempDir } from '../agent/fixtures.ts'

const schema = z.strictObject({ n: z.number().int() })

describe('persist', () => {
  let dir: string
  beforeEach(async () => {
    dir = await tempDir()
  })
  afterEach(() => removeDir(dir))

  it('writes atomically with mode 600 and leaves no temporaries', async () => {
    const path = join(dir, 'state.json')
    await writeJsonAtomic(path, { n: 1 })
    await writeJsonAtomic(path, { n: 2 })
    expect(await readJson(path, schema)).toEqual({ n: 2 })
    expect((await stat(path)).mode & 0o777).toBe(0o600)
    expect(await readdir(dir)).toEqual(['state.json'])
    await writeFileAtomic(join(dir, 'blob'), new Uint8Array([1, 2, 3]), 0o644)
    expect((await stat(join(dir, 'blob'))).mode & 0o777).toBe(0o644)
  })

  it('names the file and the problem when reading fails', async () => {
    const path = join(dir, 'x.json')
    await expect(readJson(path, schema)).rejects.toMatchObject({ name: 'PersistError', code: 'missing' })
    expect(await readJsonIfExists(path, schema)).toBeUndefined()
    await writeFile(path, '{"n": ')
    await expect(readJson(path, schema)).rejects.toThrow(new RegExp(`${path} is not valid JSON`))
    await writeFile(path, '{"n": "one"}')
    const err = await readJson(path, schema).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(PersistError)
    expect((err as PersistError).code).toBe('invalid')
    expect((err as PersistError).message).toMatch(/x\.json.*n: /)
  })

  it('removes temporaries of interrupted writes', async () => {
    await writeFile(join(dir, '.tmp-state.json-123-abcd'), 'half')
    await writeFile(join(dir, 'keep'), 'x')
    await removeStaleTemps(dir)
    expect(await readdir(dir)).toEqual(['keep'])
  })

  it('serialises sections in call order, also after a failure', async () => {
    const run = serialiser()
    const order: number[] = []
    const slow = run(async () => {
      await new Promise((r) => setTimeout(r, 20))
      order.push(1)
    })
    const failing = run(async () => {
      order.push(2)
      throw new Error('boom')
    })
    const last = run(async () => {
      order.push(3)
    })
    await Promise.allSettled([slow, failing, last])
    expect(order).toEqual([1, 2, 3])
    await expect(failing).rejects.toThrow('boom')
  })
})
