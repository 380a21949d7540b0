/**
 * @packageDocumentation
 *
 * The wire contract between coordinator, agents and admins: versioned protocol
 * ids, zod schemas for every message, the canonical CBOR codec, signed
 * envelopes with a domain-separation string per message type, length-prefixed
 * framing with a hard size limit, the hash-chained audit log format, and the
 * manifest: how one is built and the one admission rule set that both the
 * coordinator (before it stores one) and the agent (before it applies one)
 * enforce, and the fleet's signed revocation list with the rules every holder
 * of it checks. Nothing here opens a socket; `net/` carries these bytes.
 *
 * @example
 *
 * ```ts
 * import { PROTOCOLS, encodeMessage, handleFramed } from './protocol/index.ts'
 *
 * await host.handle(PROTOCOLS.control, (stream, connection) =>
 *   handleFramed(stream, connection, async (framed) => {
 *     for await (const frame of framed) { … }
 *   }, { counters }))
 * ```
 */
export * from './admin-results.ts'
export * from './audit-log.ts'
export * from './codec.ts'
export * from './control-frame.ts'
export * from './coordinator-list.ts'
export * from './diagnostics.ts'
export * from './envelope.ts'
export * from './errors.ts'
export * from './fleet-config.ts'
export * from './frame-decoder.ts'
export * from './framed-stream.ts'
export * from './framing.ts'
export * from './ids.ts'
export * from './machine-tags.ts'
export * from './maintenance-window.ts'
export * from './manifest.ts'
export * from './messages.ts'
export * from './narinfo.ts'
export * from './nix-cache.ts'
export * from './nix-payload.ts'
export * from './revocation.ts'
export * from './standby.ts'
export * from './update-log.ts'
export * from './wave-policy.ts'
export * from './waves.ts'
