/**
 * The admin CLI's commands. `bin/main.ts` routes `fleetmesh <command>` here for
 * everything except the coordinator and agent daemons.
 */
import { adminGrant, adminInstall, adminKeygen, enroll, init } from './offline.ts'
import { audit, deploy, machines, revoke, watch } from './remote.ts'

type Command = (argv: string[], home: string) => Promise<unknown>

export const ADMIN_COMMANDS: Record<string, { run: Command; help: string }> = {
  init: { run: init, help: 'create a fleet: root key, your admin certificate, the coordinator identity' },
  enroll: { run: enroll, help: 'issue a single-use enrollment token for a machine' },
  machines: { run: machines, help: 'list machines: tags, online, generations, state, last seen, path' },
  deploy: { run: deploy, help: 'upload an archive, sign a manifest and roll it out; watches until settled' },
  watch: { run: watch, help: 'follow a rollout (or the whole fleet) live' },
  audit: { run: audit, help: 'list the audit log and verify its hash chain and signatures' },
}

export const ADMIN_SUBCOMMANDS: Record<string, { run: Command; help: string }> = {
  keygen: { run: adminKeygen, help: "create this machine's admin key and print its public key" },
  grant: {
    run: adminGrant,
    help: 'issue an admin certificate (needs the root key or the "admin" capability)',
  },
  install: { run: adminInstall, help: 'install a certificate bundle produced by "admin grant"' },
  revoke: { run: revoke, help: 'revoke a certificate by serial' },
}
