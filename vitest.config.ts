import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Integration tests start real processes and real libp2p hosts; give them room
    // but keep a hard ceiling so a hung peer fails the run instead of stalling CI.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One test file at a time: the integration and NAT lab files run many real
    // processes each, and on a 2-core machine two of them together starve each
    // other's timers into spurious timeouts. The whole suite stays under ~5 min.
    fileParallelism: false,
    reporters: ['default'],
  },
})
