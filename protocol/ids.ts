/**
 * Protocol ids. Versioned so a v2 can run beside v1 during a rolling upgrade of
 * the fleet; a peer that speaks neither gets libp2p's "protocol not supported".
 */
export const PROTOCOLS = {
  /** One long-lived stream per agent: manifests down, signed status reports up. */
  control: '/fleetmesh/control/1',
  /** Admin CLI requests, each signed by an admin key holding a certificate. */
  admin: '/fleetmesh/admin/1',
  /** Content-addressed blob download (agents) and upload (admins), resumable by offset. */
  blob: '/fleetmesh/blob/1',
  /**
   * The coordinator's Nix binary cache: an agent asks for the narinfos of a
   * closure in one request; the NARs themselves travel over `blob`.
   */
  nix: '/fleetmesh/nix/1',
  /** First contact of a new agent, presenting its enrollment token. */
  enroll: '/fleetmesh/enroll/1',
  /**
   * An agent's quiet stream to the coordinator it would fail over to
   * (standby.ts): it keeps that connection open and handshaken in advance.
   */
  standby: '/fleetmesh/standby/1',
} as const

export type ProtocolId = (typeof PROTOCOLS)[keyof typeof PROTOCOLS]

/**
 * The largest data frame of a blob transfer: the coordinator sends downloads
 * (`blob`) in frames of this size and admins send `upload-blob` data in them.
 * Each end sizes its frame limit by it, so both must agree: changing it is a
 * wire change (a peer with the old value refuses larger frames).
 */
export const BLOB_CHUNK_BYTES = 256 * 1024

/** The wire protocol version carried in hello messages. */
export const WIRE_VERSION = 1
