/**
 * Reading and writing files that hold private keys. They are mode 0600, written
 * through a temporary file and a rename so a crash never leaves half a key, and
 * refused on read when others could read them: a key that was exposed should be
 * noticed, not silently used.
 */
import { mkdir, readFile, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { writeFileAtomic } from '../lib/index.ts'
import { KeyFileError } from './errors.ts'

/** Reads a private key file after checking that only its owner can read it. */
export async function readSecretFile(path: string): Promise<string> {
  let info: Awaited<ReturnType<typeof stat>>
  try {
    info = await stat(path)
  } catch (err) {
    throw new KeyFileError(path, `cannot read key file ${path}: ${(err as Error).message}`, { cause: err })
  }
  if ((info.mode & 0o077) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(3, '0')
    throw new KeyFileError(
      path,
      `key file ${path} has mode ${mode}, so other users can read it; a private key must be 600. ` +
        `Fix it with: chmod 600 ${path} (and consider the key exposed if others had access)`,
    )
  }
  return readFile(path, 'utf8')
}

/** Writes a private key file with mode 0600 (its directory 0700), atomically. */
export async function writeSecretFile(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  await writeFileAtomic(path, text, 0o600)
}
