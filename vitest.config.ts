import { defineConfig } from 'vitest/config'

/**
 * The NAT lab and the NixOS tests drive network namespaces, iptables and Nix
 * with timing that matters (simultaneous TCP open, switch deadlines): on a
 * 2-core machine, another file beside them starves their timers into spurious
 * timeouts. They run alone, one file at a time, after everything else.
 */
const SERIAL = ['test/natlab/**/*.test.ts', 'test/nixos/**/*.test.ts']
/**
 * Lab files that spend their time waiting on real timers (a conntrack timeout
 * expiring, a punch backoff, a relay coming back) and use little CPU: they run
 * two at a time, before the serial files (vitest runs a group's files in one
 * pool, so they cannot share a group with the serial files without two of those
 * running at once). Each lab has namespaces of its own (`fm-<pid>-…`), so two
 * labs never share a router.
 */
const LAB_WAITING = [
  'test/natlab/nat-keepalive.test.ts',
  'test/natlab/path-upgrade.test.ts',
  'test/natlab/relays.test.ts',
  'test/natlab/quic.test.ts',
]

export default defineConfig({
  test: {
    // Integration tests start real processes and real libp2p hosts; give them room
    // but keep a hard ceiling so a hung peer fails the run instead of stalling CI.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'main',
          include: ['test/**/*.test.ts'],
          exclude: SERIAL,
          // Two files at a time: most of a real-process test is waiting on sockets and
          // child processes, so two overlap well on two cores; every wait is on an event.
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'serial',
          include: SERIAL,
          exclude: LAB_WAITING,
          fileParallelism: false,
          sequence: { groupOrder: 2 },
        },
      },
      {
        extends: true,
        test: {
          name: 'lab-waiting',
          include: LAB_WAITING,
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})
