/**
 * `--max-accepts-per-ip`: how many new inbound connections per second the
 * coordinator and the relay accept from one IP address (libp2p's
 * inboundConnectionThreshold). Every device of a site behind one NAT address
 * shares one IP, and all of them redial at once after a restart of the
 * coordinator: the limit must let such a site back in seconds, while the cap on
 * handshakes in progress (host-profiles.ts) still bounds what a flood costs.
 */
import { int, type Options, type Parsed } from '../lib/index.ts'

export const DEFAULT_MAX_ACCEPTS_PER_IP = 500
const MOST_ACCEPTS_PER_IP = 100_000

export const ACCEPT_LIMIT_OPTIONS = {
  'max-accepts-per-ip': {
    type: 'string',
    value: 'N',
    description:
      'new inbound connections accepted per second from one IP address (devices behind one NAT share one)',
    default: String(DEFAULT_MAX_ACCEPTS_PER_IP),
  },
} as const satisfies Options

/** The option's value, refused as a usage error unless a whole number from 1 to 100000. */
export function maxAcceptsPerIp(p: Parsed): number {
  return int(p, 'max-accepts-per-ip', DEFAULT_MAX_ACCEPTS_PER_IP, 1, MOST_ACCEPTS_PER_IP)
}
