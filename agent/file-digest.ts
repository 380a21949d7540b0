/**
 * The SHA-256 of a download file, computed from the chunks as they are written
 * rather than by reading the whole file back once it is complete.
 *
 * A download only ever appends, so the digest covers the file's first `bytes`
 * bytes and follows each appended chunk. Bytes it has not seen — the partial
 * file an earlier run left behind, or chunks appended by a writer that does not
 * report them — are read from the file once, when a writer announces where it
 * goes on from ({@link FileDigest.seek}) or when the digest is asked for.
 *
 * @example
 *
 * ```ts
 * const digest = new FileDigest(part)
 * await digest.seek(offset) // hashes the first `offset` bytes already on disk
 * for await (const chunk of chunks) {
 *   await handle.write(chunk)
 *   digest.update(chunk)
 * }
 * if ((await digest.digest()) !== sha256) throw new Error('hash mismatch')
 * ```
 */
import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { fileSize } from '../lib/index.ts'

export class FileDigest {
  readonly path: string
  #hash: Hash = createHash('sha256')
  #bytes = 0

  constructor(path: string) {
    this.path = path
  }

  /** How many of the file's leading bytes the digest covers. */
  get bytes(): number {
    return this.#bytes
  }

  /**
   * Makes the digest cover exactly the file's first `offset` bytes, before a
   * writer appends from there: reads those it has not seen, or starts over when
   * the writer starts from an earlier point (it truncates the file).
   */
  async seek(offset: number): Promise<void> {
    if (offset < this.#bytes) {
      this.#hash = createHash('sha256')
      this.#bytes = 0
    }
    if (offset === this.#bytes) return
    const from = this.#bytes
    for await (const chunk of createReadStream(this.path, { start: from, end: offset - 1 })) {
      this.update(chunk as Buffer)
    }
    if (this.#bytes !== offset) {
      throw new Error(`${this.path} has ${this.#bytes} bytes, fewer than the ${offset} it was said to hold`)
    }
  }

  /** Takes the bytes just appended to the file, at the end the digest covers. */
  update(chunk: Uint8Array): void {
    this.#hash.update(chunk)
    this.#bytes += chunk.byteLength
  }

  /** The SHA-256 (hex) of the whole file as it is now. */
  async digest(): Promise<string> {
    await this.seek((await fileSize(this.path)) ?? 0)
    return this.#hash.copy().digest('hex')
  }
}
