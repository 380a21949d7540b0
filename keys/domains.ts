/**
 * Domain-separation strings, one per kind of signed message. The signed bytes
 * start with the domain (see ed25519.ts), so a signature over one kind of message
 * can never be replayed as another. All domains live in this one registry so two
 * kinds can never share one by accident.
 */
export const DOMAINS = {
  certificate: 'fleetmesh/certificate/v1',
  enrollmentToken: 'fleetmesh/enrollment-token/v1',
  manifest: 'fleetmesh/manifest/v1',
  status: 'fleetmesh/status/v1',
  adminRequest: 'fleetmesh/admin-request/v1',
  enrollRequest: 'fleetmesh/enroll-request/v1',
  audit: 'fleetmesh/audit/v1',
  hello: 'fleetmesh/hello/v1',
  revocations: 'fleetmesh/revocations/v1',
  machineTags: 'fleetmesh/machine-tags/v1',
  /** The fleet root's list of the coordinators that serve the fleet (protocol/coordinator-list.ts). */
  coordinatorList: 'fleetmesh/coordinator-list/v1',
} as const

export type DomainName = keyof typeof DOMAINS
export type Domain = (typeof DOMAINS)[DomainName]

const KNOWN = new Set<string>(Object.values(DOMAINS))

export function isDomain(value: unknown): value is Domain {
  return typeof value === 'string' && KNOWN.has(value)
}
