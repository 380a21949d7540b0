/**
 * Whom the coordinator's host dials and punches with: other networks' private
 * addresses (DHT peers', agents') only where they can be on ours (net's
 * DialScope), and hole punches only with the fleet's own enrolled machines, not
 * admins nor other fleets' peers met through a shared relay or DHT.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { DialScope, extraService, type FleetHost, type HolePunchService, holePunch } from '../net/index.ts'
import type { FleetEvents } from './events.ts'
import type { FleetStore } from './store.ts'

/** The operator's addresses (bootstrap peers, relays) stay dialable whatever their range. */
export function coordinatorDialScope(bootstrap: readonly string[], relays: readonly string[]): DialScope {
  return new DialScope({ allow: [...bootstrap, ...relays] })
}

/**
 * The hole-punching service, punching only with machines the store knows; the
 * LAN addresses such a machine behind our public address offers pass `scope`.
 */
export function fleetHolePunch(
  observers: string[],
  keepaliveMaxMs: number | undefined,
  store: Pick<FleetStore, 'getMachineByPeer'>,
  scope: DialScope,
) {
  return holePunch({
    observers,
    reprobeIntervalMs: keepaliveMaxMs,
    shouldPunch: async (peer) => (await store.getMachineByPeer(peer.toString())) !== undefined,
    allowLanDials: (ips) => scope.allowLan(ips),
  })
}

/**
 * A machine that enrolled over a relayed connection was no one to punch with
 * when that connection opened: once its control session is up (relayed, here),
 * the service is asked again.
 */
export function punchWhenOnline(
  host: FleetHost,
  events: FleetEvents,
  store: Pick<FleetStore, 'getMachine'>,
): () => void {
  const punching = extraService<HolePunchService>(host, 'holePunch')
  if (punching === undefined) return () => {}
  return events.on((e) => {
    if (e.type !== 'online' || e.path !== 'relayed' || e.remote) return
    store.getMachine(e.machine).then(
      (m) => m && punching.reconsider(peerIdFromString(m.peerId)),
      () => {}, // a store error shows elsewhere; this only misses a punch
    )
  })
}
