/**
 * The agent's copy of the fleet's signed revocation list (protocol/revocation.ts),
 * kept in `<state>/revocations.json` and checked again, entry by entry from the
 * pinned fleet root, whenever it is read. Manifests are verified against it
 * (agent/verify.ts): a signer on it is refused as `revoked`, and a manifest whose
 * signer saw a longer list than this one is not acted on until the rest arrives.
 *
 * The coordinator carries the list but cannot sign entries, so the agent takes
 * from it only entries that extend its own list, and keeps its own when the
 * coordinator's differs:
 *
 *   coordinator's hello head   what the agent does
 *   same as ours               nothing
 *   longer                     takes the entries that follow (sent before any manifest)
 *   a prefix of ours           the coordinator lost entries (restored from a backup) or
 *                              withholds them: reported, and ours are sent back to it
 *   another entry at its seq   the lists forked: reported; ours is kept
 *
 * After a start the agent activates nothing until it has heard the coordinator's
 * list once (`whenSynced`): an update resumed from before the restart would
 * otherwise run before a revocation issued meanwhile could reach it.
 */
import { join } from 'node:path'
import { z } from 'zod'
import {
  fromBase64,
  PersistError,
  raceSignal,
  readJsonIfExists,
  toBase64,
  writeJsonAtomic,
} from '../lib/index.ts'
import {
  type ErrorInfo,
  MAX_REVOCATIONS,
  RevocationChain,
  RevocationError,
  type RevocationHead,
  type RevocationPolicy,
  type RevocationView,
  revocationBatches,
} from '../protocol/index.ts'

const fileSchema = z.strictObject({
  v: z.literal(1),
  /** The signed entries, base64, in order. */
  entries: z.array(z.string()).max(MAX_REVOCATIONS),
})

export interface AgentRevocationsInit {
  /** A fork, a coordinator that lost entries, a bad entry: logged loudly and reported in the agent's status. */
  onProblem: (error: ErrorInfo) => void
  /** New entries were taken: an update in flight must be checked again. */
  onChange: () => void
}

export class AgentRevocations {
  readonly #path: string
  readonly #chain: RevocationChain
  readonly #init: AgentRevocationsInit
  /** The coordinator's head announced in this session's hello, while its entries are still to come. */
  #expected: number | undefined
  #synced = false
  #waiters: (() => void)[] = []

  private constructor(path: string, chain: RevocationChain, init: AgentRevocationsInit) {
    this.#path = path
    this.#chain = chain
    this.#init = init
  }

  /** Reads and re-checks `<stateDir>/revocations.json` (missing: the empty list). */
  static async open(
    stateDir: string,
    policy: RevocationPolicy,
    init: AgentRevocationsInit,
  ): Promise<AgentRevocations> {
    const path = join(stateDir, 'revocations.json')
    let chain: RevocationChain
    try {
      const file = await readJsonIfExists(path, fileSchema)
      chain = RevocationChain.from(policy, (file?.entries ?? []).map(fromBase64))
    } catch (err) {
      if (!(err instanceof PersistError || err instanceof RevocationError)) throw err
      throw new PersistError(
        'invalid',
        path,
        `${path} is damaged (${err.message}). Moving it aside lets the agent start: it gets the list from the ` +
          'coordinator again, but cannot tell any more whether the coordinator holds back entries it had',
        { cause: err },
      )
    }
    return new AgentRevocations(path, chain, init)
  }

  /** What manifests are checked against. */
  get view(): RevocationView {
    return this.#chain
  }

  head(): RevocationHead {
    return this.#chain.head
  }

  /** Whether a coordinator has delivered its list (or shown it has none to add) since the start. */
  get synced(): boolean {
    return this.#synced
  }

  /** Resolves once a coordinator has delivered its list (or shown it has none to add) since the start. */
  whenSynced(signal: AbortSignal): Promise<void> {
    if (this.#synced) return Promise.resolve()
    // raceSignal removes its abort listener once settled; the signal lives as long as the agent
    return raceSignal(new Promise<void>((resolve) => this.#waiters.push(resolve)), signal)
  }

  /**
   * The coordinator's hello: its head, or undefined when it keeps no signed list
   * (an older coordinator). Resolves with the entries to give back to it, in frames.
   */
  async hello(theirs: RevocationHead | undefined): Promise<Uint8Array[][]> {
    this.#expected = undefined
    if (theirs === undefined) {
      this.#markSynced()
      return []
    }
    const ours = this.#chain.head
    switch (this.#chain.relation(theirs)) {
      case 'same':
        this.#markSynced()
        return []
      case 'ahead':
        this.#expected = theirs.seq
        return []
      case 'behind':
        this.#problem(
          'revocations-rollback',
          `the coordinator's revocation list ends at entry ${theirs.seq}, but this agent holds it up to entry ${ours.seq}: ` +
            'the coordinator lost entries (restored from an older backup?) or holds them back. This agent keeps ' +
            'its list and sends the missing entries back to the coordinator',
        )
        this.#markSynced()
        return revocationBatches(this.#chain.after(theirs.seq).map((e) => e.envelope))
      case 'fork':
        this.#problem(
          'revocations-fork',
          `the coordinator's revocation list holds another entry ${theirs.seq} than this agent's: the lists forked. ` +
            'This agent keeps its own list and refuses manifests that name the other one',
        )
        this.#markSynced()
        return []
    }
  }

  /** Entries from the coordinator: those that extend the list are taken and stored before this resolves. */
  async receive(envelopes: readonly Uint8Array[]): Promise<void> {
    const { added, error } = this.#chain.accept(envelopes)
    if (added > 0) {
      await writeJsonAtomic(this.#path, {
        v: 1,
        entries: this.#chain.after(0).map((e) => toBase64(e.envelope)),
      } satisfies z.infer<typeof fileSchema>)
      this.#init.onChange()
    }
    if (error !== undefined) {
      const code = error.code === 'fork' ? 'revocations-fork' : 'revocations-refused'
      this.#problem(
        code,
        `a revocation entry from the coordinator was refused (${error.code}): ${error.message}`,
      )
      // Nothing after a refused entry can extend this list: what the coordinator has is heard.
      this.#markSynced()
    }
    if (this.#expected !== undefined && this.#chain.head.seq >= this.#expected) this.#markSynced()
  }

  #markSynced(): void {
    this.#expected = undefined
    this.#synced = true
    for (const w of this.#waiters.splice(0)) w()
  }

  #problem(code: string, message: string): void {
    this.#init.onProblem({ code, message })
  }
}
