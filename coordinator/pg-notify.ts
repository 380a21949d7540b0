/**
 * The cluster channel (cluster-channel.ts) of coordinators sharing a PostgreSQL
 * store. Changes are announced by triggers (pg-schema.ts, migration 2) with
 * pg_notify inside the transaction that makes them, so a note is delivered
 * exactly when the change commits and never for one rolled back; each note
 * carries the writer's `fleetmesh.origin` (its peer id, pg-db.ts sessionConfig).
 * Coordinators announce their agents' sessions with pg_notify over the pool.
 *
 * Two connections per coordinator are its own, outside the pool: the listener
 * (a connection in LISTEN must stay one session) and the rollout lease (a
 * session-level advisory lock, LOCKS.rollouts, which the server releases the
 * moment that connection ends, also when the coordinator is killed). Waiting
 * for the lease is a blocking pg_advisory_lock: the waiter is woken by the
 * server when the holder's session ends, with no polling. Either connection,
 * once lost, is re-made with backoff; the listener then asks for a resync,
 * since notes sent meanwhile are lost, and a lost lease is given up at once.
 */
import pg from 'pg'
import { errorMessage, RecoveryBackoff, sleep } from '../lib/index.ts'
import {
  type ClusterChannel,
  type ClusterHandlers,
  clusterNoteSchema,
  type LeaseHandlers,
  type OwnNote,
} from './cluster-channel.ts'
import { LOCK_CLASS, LOCKS, type PgDb, type PgOptions, redactUrl, sessionConfig } from './pg-db.ts'

/** The channel every fleetmesh trigger and coordinator notifies on. */
export const NOTIFY_CHANNEL = 'fleetmesh'

export class PgClusterChannel implements ClusterChannel {
  readonly origin: string
  readonly #db: PgDb
  readonly #config: pg.ClientConfig
  readonly #url: string
  readonly #stop = new AbortController()
  readonly #running: Promise<void>[] = []

  constructor(db: PgDb, url: string, options: PgOptions & { origin: string }) {
    this.#db = db
    this.#url = url
    this.origin = options.origin
    // Its own sessions wait (LISTEN, the lease) without a statement timeout; keepalive finds a dead server.
    this.#config = { ...sessionConfig(url, options), statement_timeout: 0, keepAlive: true }
  }

  listen(handlers: ClusterHandlers): void {
    this.#running.push(
      this.#hold('cluster listener', handlers.log, async (client, lost) => {
        client.on('notification', (msg) => {
          if (msg.channel !== NOTIFY_CHANNEL || msg.payload === undefined) return
          let parsed: unknown
          try {
            parsed = JSON.parse(msg.payload)
          } catch {
            return
          }
          const note = clusterNoteSchema.safeParse(parsed)
          // notes of a newer fleetmesh are skipped; our own changes were acted on where they were made
          if (note.success && note.data.o !== this.origin) handlers.note(note.data)
        })
        await client.query(`LISTEN ${NOTIFY_CHANNEL}`)
        handlers.resync()
        await lost
      }),
    )
  }

  async publish(note: OwnNote): Promise<void> {
    await this.#db.sql.run('SELECT pg_notify($1, $2)', [
      NOTIFY_CHANNEL,
      JSON.stringify({ ...note, o: this.origin }),
    ])
  }

  async offerCoordinatorList(version: number, envelope: Uint8Array): Promise<void> {
    await this.#db.sql.run(
      `INSERT INTO coordinator_list (singleton, version, envelope) VALUES (1, $1, $2)
       ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, envelope = EXCLUDED.envelope
       WHERE coordinator_list.version < EXCLUDED.version`,
      [version, envelope],
    )
  }

  async coordinatorList(): Promise<Uint8Array | undefined> {
    const [row] = await this.#db.sql.rows('SELECT envelope FROM coordinator_list WHERE singleton = 1')
    const envelope = row?.envelope
    return envelope instanceof Uint8Array ? envelope : undefined
  }

  lease(handlers: LeaseHandlers): void {
    this.#running.push(
      this.#hold('rollout lease', handlers.log, async (client, lost) => {
        await client.query('SELECT pg_advisory_lock($1, $2)', [LOCK_CLASS, LOCKS.rollouts])
        handlers.gained()
        await lost
        if (!this.#stop.signal.aborted) handlers.lost() // on close the engine is stopping anyway
      }),
    )
  }

  async close(): Promise<void> {
    this.#stop.abort()
    await Promise.all(this.#running)
  }

  /**
   * Keeps one dedicated session: connects, runs `use` (which resolves once the
   * connection is lost), and connects again after a backoff, until close.
   */
  async #hold(
    what: string,
    log: (msg: string) => void,
    use: (client: pg.Client, lost: Promise<Error>) => Promise<void>,
  ): Promise<void> {
    const signal = this.#stop.signal
    const backoff = new RecoveryBackoff({
      initialMs: 250,
      maxMs: 10_000,
      quickMaxMs: 1_000,
      quickForMs: 60_000,
    })
    while (!signal.aborted) {
      const client = new pg.Client(this.#config)
      const lost = new Promise<Error>((resolve) => {
        client.on('error', resolve)
        client.on('end', () => resolve(new Error('the connection ended')))
      })
      const end = () => void client.end().catch(() => {})
      signal.addEventListener('abort', end, { once: true })
      try {
        await client.connect()
        backoff.succeeded()
        await use(client, lost)
        if (!signal.aborted)
          log(`${what}: lost ${redactUrl(this.#url)} (${(await lost).message}); reconnecting`)
      } catch (err) {
        if (!signal.aborted) log(`${what}: ${redactUrl(this.#url)}: ${errorMessage(err)}; retrying`)
      } finally {
        signal.removeEventListener('abort', end)
        end()
      }
      await sleep(backoff.next(), signal).catch(() => {})
    }
  }
}
