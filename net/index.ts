/**
 * @packageDocumentation
 *
 * Networking: the libp2p host every role runs (TCP, Noise, Yamux, identify,
 * ping, kad-dht, circuit relay v2), how a connection reached us
 * ({@link ConnectionPath}: direct or relayed), relay reservations kept alive
 * by a NATed coordinator, fleetmesh's own TCP hole punching and NAT
 * observation, the runtime snapshot each daemon writes, and `doctor`, which
 * reads it. Roles build on this; this folder knows nothing of coordinators or
 * agents beyond the role name it is given.
 *
 * @example
 *
 * ```ts
 * import { createHost, connectionPath, openStream } from './net/index.ts'
 *
 * const host = await createHost({ role: 'agent', privateKey, listen: [] })
 * const stream = await openStream(host, coordinatorAddrs, PROTOCOLS.control)
 * console.log(connectionPath(stream.connection)) // 'direct' | 'relayed'
 * ```
 */

export * from './daemon-cli.ts'
export * from './doctor.ts'
export * from './holepunch/index.ts'
export { socketToMultiaddrConnection } from './holepunch/socket-conn.ts'
export * from './host.ts'
export * from './reservations.ts'
export * from './runtime.ts'
