/**
 * What coordinators sharing one store tell each other (FleetStore.cluster): the
 * store announces every committed change another coordinator has to act on (a
 * desired state, a status report, a tag record, a rollout, a manifest, an
 * enrollment, a revocation), and coordinators announce their agents' sessions.
 * Notes carry keys only; the receiver reads the rows. The store used by one
 * coordinator alone (SQLite) has no channel. pg-notify.ts implements it with
 * PostgreSQL's LISTEN/NOTIFY, cluster.ts acts on the notes.
 */
import { z } from 'zod'

const origin = z.string().max(128).nullable()

export const clusterNoteSchema = z.discriminatedUnion('k', [
  z.object({ k: z.literal('desired'), o: origin, machine: z.string() }),
  z.object({ k: z.literal('status'), o: origin, machine: z.string(), seq: z.number().int() }),
  z.object({ k: z.literal('tags'), o: origin, machine: z.string() }),
  z.object({ k: z.literal('rollout'), o: origin, id: z.string() }),
  z.object({ k: z.literal('manifest'), o: origin, id: z.string() }),
  z.object({ k: z.literal('enrolled'), o: origin, name: z.string() }),
  z.object({ k: z.literal('revoked'), o: origin, serial: z.string() }),
  z.object({ k: z.literal('coordinators'), o: origin, version: z.number().int() }),
  z.object({ k: z.literal('online'), o: origin, machine: z.string(), path: z.enum(['direct', 'relayed']) }),
  z.object({ k: z.literal('offline'), o: origin, machine: z.string() }),
  /** A coordinator (re)joined: the others announce their sessions again. */
  z.object({ k: z.literal('hello'), o: origin }),
  /** A coordinator is alive: sent every ClusterMember alive interval, so its sessions outlive it only so long. */
  z.object({ k: z.literal('alive'), o: origin }),
])
export type ClusterNote = z.infer<typeof clusterNoteSchema>

/** A note as a coordinator announces it; its origin is filled in by the channel. */
export type OwnNote =
  | { k: 'online'; machine: string; path: 'direct' | 'relayed' }
  | { k: 'offline'; machine: string }
  | { k: 'hello' }
  | { k: 'alive' }

export interface ClusterHandlers {
  note(note: ClusterNote): void
  /**
   * The channel (re)connected: notes may have been missed while it was down,
   * so whatever they would have caused is redone from the store.
   */
  resync(): void
  log(msg: string): void
}

export interface LeaseHandlers {
  /** This coordinator now holds the lease: it alone moves rollouts on. */
  gained(): void
  /** The lease's connection failed: another coordinator may hold it now. */
  lost(): void
  log(msg: string): void
}

export interface ClusterChannel {
  /** This coordinator's peer id, as its own notes carry it. */
  readonly origin: string
  /** Starts listening, reconnecting after failures, until close. */
  listen(handlers: ClusterHandlers): void
  /** Announces a note to every coordinator (this one's listener skips it by origin). */
  publish(note: OwnNote): Promise<void>
  /**
   * Stores a signed coordinator list (already verified) unless the store holds
   * one of the same or a higher version: lists only move forward.
   */
  offerCoordinatorList(version: number, envelope: Uint8Array): Promise<void>
  /** The stored coordinator list's envelope, as signed; undefined before any was offered. */
  coordinatorList(): Promise<Uint8Array | undefined>
  /** Competes for the rollout lease until close; at most one coordinator holds it at a time. */
  lease(handlers: LeaseHandlers): void
  close(): Promise<void>
}
