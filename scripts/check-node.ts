// Every npm script must run on the Node the project pins (package.json devDependency
// "node"), not on an older system Node: libp2p 3 needs Promise.withResolvers and
// node:sqlite. Failing here gives one clear line instead of a stack trace later.
const major = Number(process.versions.node.split('.')[0])
if (major < 24) {
  console.error(
    `fleetmesh needs Node 24 or newer, but this script runs on Node ${process.versions.node}. ` +
      'Run it through npm (npm test, npm run …) so the pinned node_modules/.bin/node is used, ' +
      'or run `npm ci` first if node_modules is missing.',
  )
  process.exit(1)
}
