/**
 * The coordinator's part in the signed revocation list (protocol/revocation.ts):
 * it checks and stores entries (from admins, admin-revoke.ts, and from agents
 * that hold entries this store lost in a restore from an older backup) and hands
 * them out in pages. It holds no key that could sign an entry, so all it can do
 * wrong is withhold or lose some, which agents detect (agent/revocations.ts).
 * Sending entries to agents is in control.ts.
 */
import type { PublicKey } from '../keys/index.ts'
import {
  checkNextRevocation,
  type ListState,
  MAX_REVOCATIONS_PER_FRAME,
  type OpenedRevocation,
  openRevocation,
  REVOCATION_BATCH_BYTES,
  RevocationError,
  type RevocationView,
} from '../protocol/index.ts'
import type { FleetStore, StoredRevocation } from './store.ts'

export interface RevocationsInit {
  store: FleetStore
  fleetRoot: PublicKey
  fleetId: string
}

export type StoredListState = RevocationView & ListState

/**
 * Checks `opened` as the entry after `state` (the rules every holder of the list
 * runs) and appends it. Throws RevocationError, or StoreConflictError
 * ('revocation-conflict') when another entry was appended since `state` was read.
 */
export async function appendRevocation(
  init: RevocationsInit,
  opened: OpenedRevocation,
  state: StoredListState,
): Promise<void> {
  checkNextRevocation(opened, init, state)
  await init.store.revocationLog.append({ ...opened.entry, hash: opened.hash, envelope: opened.envelope })
}

/** Entries after `seq`, at most `limit` and (past the first) REVOCATION_BATCH_BYTES of them: one frame's worth. */
export function revocationBatch(store: FleetStore, seq: number, limit: number): Promise<StoredRevocation[]> {
  return store.revocationLog.list(seq, limit, REVOCATION_BATCH_BYTES)
}

/** Sends the entries after `from`, a frame's worth at a time, until none is left; resolves with the last seq sent. */
export async function sendRevocationsAfter(
  store: FleetStore,
  from: number,
  send: (entries: Uint8Array[]) => Promise<void>,
): Promise<number> {
  let seq = from
  for (;;) {
    const rows = await revocationBatch(store, seq, MAX_REVOCATIONS_PER_FRAME)
    const last = rows.at(-1)
    if (last === undefined) return seq
    await send(rows.map((r) => r.envelope))
    seq = last.seq
  }
}

/**
 * Entries `machine`'s agent sent because it holds more of the list than this
 * store: those that extend the store's head are checked like an admin's and
 * appended; a bad or forking one stops there. Logs what happened, and resolves
 * with the store's head seq afterwards.
 */
export async function takeBackRevocations(
  init: RevocationsInit,
  machine: string,
  envelopes: readonly Uint8Array[],
  log: (msg: string) => void,
): Promise<number> {
  const added = await takeBack(init, envelopes, (err) =>
    log(`control: a revocation entry from ${machine} was not taken: ${err.code}: ${err.message}`),
  )
  if (added > 0)
    log(`control: took back ${added} revocation entries from ${machine} that this store had lost`)
  return (await init.store.revocationLog.head()).seq
}

async function takeBack(
  init: RevocationsInit,
  envelopes: readonly Uint8Array[],
  problem: (err: RevocationError) => void,
): Promise<number> {
  let added = 0
  for (const envelope of envelopes) {
    try {
      const opened = openRevocation(envelope)
      const state = await init.store.revocationLog.state()
      if (opened.entry.seq <= state.head.seq) {
        if (state.hashAt(opened.entry.seq) !== opened.hash)
          throw new RevocationError('fork', `entry ${opened.entry.seq} differs from the one stored here`)
        continue
      }
      await appendRevocation(init, opened, state)
      added++
    } catch (err) {
      if (!(err instanceof RevocationError)) throw err
      problem(err)
      return added
    }
  }
  return added
}
