/**
 * The coordinator's side of `/fleetmesh/enroll/1`: a new agent presents the
 * token an admin issued. The token must verify against this fleet's root, be
 * addressed to this coordinator, be unexpired and unused; the machine is then
 * bound to the connecting peer's key (Noise has proven the peer holds it).
 * Anyone who can connect can present a bad token, so refusals reach the audit
 * log (and the journal) at a bounded rate per peer and overall, as refusals of
 * unauthenticated admin requests do (audit-limiter.ts); the rest are counted.
 */
import type { Connection } from '@libp2p/interface'
import { PublicKey, parseToken, TokenError, verifyToken } from '../keys/index.ts'
import type { FramedStream } from '../protocol/index.ts'
import {
  decodeMessage,
  type EnrollResponse,
  encodeMessage,
  enrollRequestSchema,
  enrollResponseSchema,
} from '../protocol/index.ts'
import type { signAuditHash } from './audit.ts'
import { RefusalLimiter, type RefusalLimits } from './audit-limiter.ts'
import type { FleetEvents } from './events.ts'
import { type FleetStore, StoreConflictError } from './store.ts'

export interface EnrollmentInit {
  store: FleetStore
  events: FleetEvents
  fleetId: string
  fleetRoot: PublicKey
  coordinatorPeerId: string
  /** Another coordinator of the fleet whose tokens this one accepts too (cluster-roster.ts). */
  acceptsCoordinator?: (peerId: string) => boolean
  sign: ReturnType<typeof signAuditHash>
  log: (msg: string) => void
  /** Default: DEFAULT_REFUSAL_LIMITS. */
  refusalLimits?: Partial<RefusalLimits>
}

export function enrollmentHandler(init: EnrollmentInit) {
  const limiter = new RefusalLimiter(init.refusalLimits)
  return async (fs: FramedStream, connection: Connection): Promise<void> => {
    const frame = await fs.readOne({ timeoutMs: 30_000 })
    const request = decodeMessage(enrollRequestSchema, frame, 'enroll request', 64 * 1024)
    const peerId = connection.remotePeer.toString()
    let response: EnrollResponse
    let actor: string | null = null
    try {
      const token = parseToken(request.token)
      actor = token.signer.toString()
      verifyToken(token, { root: init.fleetRoot, revokedSerials: await init.store.revokedSerials() })
      const listed = init.acceptsCoordinator?.(token.coordinator.peerId) === true
      if (token.coordinator.peerId !== init.coordinatorPeerId && !listed) {
        throw new TokenError(
          'unauthorised',
          `token is for coordinator ${token.coordinator.peerId}, this is ${init.coordinatorPeerId}`,
        )
      }
      const machine = await init.store.enrollMachine({
        name: token.machine,
        peerId,
        publicKey: PublicKey.fromPeerId(connection.remotePeer).toString(),
        tags: token.tags,
        facts: request.facts,
        nonce: token.nonce,
        at: Date.now(),
      })
      init.events.emit({ type: 'enrolled', machine })
      response = { ok: true, machine: machine.name, fleetId: init.fleetId, fleetRoot: init.fleetRoot.bytes }
      await init.store.appendAudit(
        {
          at: Date.now(),
          peerId,
          actor,
          action: 'enroll',
          outcome: 'ok',
          detail: `${machine.name} [${machine.tags.join(',')}] nonce ${token.nonce}`,
          request: null,
        },
        init.sign,
      )
      init.log(`enrolled ${machine.name} as ${peerId}`)
    } catch (err) {
      if (!(err instanceof TokenError || err instanceof StoreConflictError)) throw err
      response = { ok: false, error: { code: err.code, message: err.message } }
      const at = Date.now()
      const verdict = limiter.admit(peerId, at)
      if (verdict.record) {
        await init.store.appendAudit(
          {
            at,
            peerId,
            actor,
            action: 'enroll',
            outcome: 'denied',
            detail: `${err.code}: ${err.message}`.slice(0, 2000) + verdict.note,
            request: null,
          },
          init.sign,
        )
        init.log(`enrollment from ${peerId} refused: ${err.message}`)
      }
    }
    await fs.send(encodeMessage(enrollResponseSchema, response))
  }
}
