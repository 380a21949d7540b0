import { defineConfig } from 'vitest/config'

/**
 * The NAT lab and the NixOS tests drive network namespaces, iptables and Nix
 * with timing that matters (simultaneous TCP open, switch deadlines): on a
 * 2-core machine, another file beside them starves their timers into spurious
 * timeouts. They run alone, one file at a time, after everything else.
 */
const SERIAL = ['test/natlab/**/*.test.ts', 'test/nixos/**/*.test.ts']

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
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})
