// Types of the JSON events the probes print, for tests reading them through
// LabProcess.waitFor<T>(). Type-only: nothing here runs. Used by
// test/natlab/lab.test.ts, holepunch.test.ts and sock-client.ts.

import type { ProbeEvent } from '../lab-process.ts'

export interface Endpoint {
  address: string
  port: number
}

/** observer.ts and rendezvous.ts */
export interface ListeningEvent extends ProbeEvent {
  event: 'listening'
  port: number
  id?: string
}

/** sock.ts */
export interface ConnectedEvent extends ProbeEvent {
  event: 'connected'
  id: string
  localAddress: string
  localPort: number
  remoteAddress: string
  remotePort: number
}

/** sock.ts: one line received on socket `id` */
export interface DataEvent extends ProbeEvent {
  event: 'data'
  id: string
  line: string
}

/** sock.ts: `phase` is connect, listen or io */
export interface SockErrorEvent extends ProbeEvent {
  event: 'error'
  id: string
  phase: 'connect' | 'listen' | 'io'
  code: string
  message: string
}

/** sock.ts listeners and observer.ts */
export interface AcceptedEvent extends ProbeEvent {
  event: 'accepted'
  address: string
  port: number
  id?: string
}

/** punch.ts, one per trial */
export type TrialEvent = TrialSuccess | TrialFailure

export interface TrialSuccess extends ProbeEvent {
  event: 'trial'
  trial: number
  ok: true
  attempts: number
  /** From the rendezvous' answer (plus any start delay) to the connect event. */
  connectMs: number
  totalMs: number
  errors: Record<string, number>
  role: 'initiator' | 'responder'
  peer: Endpoint & { name: string }
  local: Endpoint
  remote: Endpoint
  bytesReceived: number
}

export interface TrialFailure extends ProbeEvent {
  event: 'trial'
  trial: number
  ok: false
  attempts: number
  errors: Record<string, number>
  elapsedMs: number
  error: { name: string; message: string }
}

export interface DoneEvent extends ProbeEvent {
  event: 'done'
  ok: number
  failed: number
}

/** libp2p-punch.ts, at start */
export interface PeerEvent extends ProbeEvent {
  event: 'peer'
  peerId: string
}

/** libp2p-punch.ts, the outcome */
export type UpgradedEvent = UpgradedSuccess | UpgradedFailure

export interface UpgradedSuccess extends ProbeEvent {
  event: 'upgraded'
  ok: true
  role: 'initiator' | 'responder'
  remotePeer: string
  /** The libp2p Connection's direction: outbound on the initiator. */
  direction: 'inbound' | 'outbound'
  encryption: string
  multiplexer: string
  remoteAddr: string
  /** Connections the node has to the peer after the upgrade (the connection manager tracks it). */
  connections: number
  attempts: number
  connectMs: number
  upgradeMs: number
  rttMs: number
}

export interface UpgradedFailure extends ProbeEvent {
  event: 'upgraded'
  ok: false
  error: { name: string; message: string }
}
