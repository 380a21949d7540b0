/**
 * In-process fleet events: what `watch` streams to admins (each cut to the
 * admin's scope) and what a dashboard would show. Listeners are called
 * synchronously; slow consumers (admin watch streams) buffer on their own side
 * with a bound.
 */
import type { ConnectionPath } from '../protocol/index.ts'
import type { MachineRecord, ManifestRecord, StatusRecord } from './store.ts'

export type FleetEvent =
  | { type: 'status'; machine: string; status: StatusRecord; remote?: true }
  /** `remote`: the session is with another coordinator of the fleet (cluster.ts), not this one. */
  | { type: 'online'; machine: string; path: ConnectionPath; remote?: true }
  | { type: 'offline'; machine: string; remote?: true }
  | { type: 'manifest'; manifest: ManifestRecord }
  | { type: 'enrolled'; machine: MachineRecord }
  /** A certificate serial was revoked: long-lived admin streams check their authority again at once. */
  | { type: 'revoked'; serial: string }
  /** Output of a machine's running update, live and never stored (update-log-gate.ts): to watches of that machine. */
  | { type: 'update-log'; machine: string; manifestId: string; offset: number; text: string }

export type FleetListener = (event: FleetEvent) => void

export class FleetEvents {
  readonly #listeners = new Set<FleetListener>()

  on(listener: FleetListener): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  emit(event: FleetEvent): void {
    for (const l of this.#listeners) {
      try {
        l(event)
      } catch {
        // A failing listener (e.g. a watch stream that just closed) must not stop the others.
      }
    }
  }

  get listenerCount(): number {
    return this.#listeners.size
  }
}
