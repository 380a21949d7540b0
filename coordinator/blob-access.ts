/**
 * Who may learn that the coordinator stores a blob. Blobs are content-addressed
 * and have no target, so "already stored" (upload-blob) or "not on the
 * coordinator" (submit-manifest) would otherwise tell any deployer whether
 * someone, in any scope, uploaded the file with a given hash: a way to confirm
 * a guess about another team's release, or to deploy its archive to one's own
 * machines and read it there without ever holding it.
 *
 * So a stored blob counts as present for an admin only when
 * - its scope is the whole fleet (every machine is in its reach anyway), or
 * - it proved it holds the bytes: it uploaded the whole blob, hash checked, to
 *   this coordinator process. Any other admin sends the bytes again (the answer
 *   is the same whether the blob was there before or not), then may use it.
 *
 * Kept in memory: after a restart a scoped admin uploads once more, which
 * `deploy` does by itself. Bounded per admin and in the number of admins; what
 * is forgotten only costs another upload.
 */
import { type Authority, authorityIsFleetWide } from '../keys/index.ts'

/** Blobs remembered per admin key, newest kept. */
const MAX_BLOBS_PER_ADMIN = 4096
/** Admin keys remembered, most recently active kept. */
const MAX_ADMINS = 1024

export class BlobAccess {
  /** Admin key → hashes of the blobs it uploaded whole, oldest first. */
  readonly #held = new Map<string, Set<string>>()

  /** Whether the admin `actor` (with `authority`) may be told whether `sha256` is stored. */
  mayKnow(authority: Authority, actor: string, sha256: string): boolean {
    return authorityIsFleetWide(authority) || (this.#held.get(actor)?.has(sha256) ?? false)
  }

  /** `actor` uploaded the whole of `sha256` and it matched its hash. */
  proven(actor: string, sha256: string): void {
    const held = this.#held.get(actor) ?? new Set<string>()
    this.#held.delete(actor)
    this.#held.set(actor, held)
    held.delete(sha256)
    held.add(sha256)
    if (held.size > MAX_BLOBS_PER_ADMIN) held.delete(held.values().next().value as string)
    if (this.#held.size > MAX_ADMINS) this.#held.delete(this.#held.keys().next().value as string)
  }
}
