# The start script of the fleetmesh agent service (nix/module.nix wraps it with
# pkgs.writeShellScript). It is a script rather than a plain ExecStart because
# the enrollment token is passed only while the state directory holds no
# enrollment.json yet: the agent needs the token on its first start only.
#
# The token goes over as `--token @<file>`, which the agent CLI reads itself,
# so the token never appears in the process list as `--token "$(cat file)"`
# would make it.
#
# cfg is config.services.fleetmesh.agent; the script passes its own arguments
# (systemd's $FLEETMESH_ARGS from /etc/fleetmesh/agent.env) on after the
# flags from the configuration.
{ lib, cfg }:
let
  inherit (lib) escapeShellArg escapeShellArgs concatMap optionalString;
  repeated = flag: values: concatMap (value: [ flag value ]) values;
  flags =
    repeated "--bootstrap" cfg.bootstrap
    ++ [
      "--nix-profile"
      cfg.nixProfile
      "--nix-keep-generations"
      (toString cfg.keepGenerations)
    ]
    ++ cfg.extraFlags;
  stateDir = toString cfg.stateDir;
in
''
  set -eu
''
+ optionalString (cfg.tokenFile != null) ''
  if [ ! -e ${escapeShellArg "${stateDir}/enrollment.json"} ]; then
    set -- --token ${escapeShellArg "@${toString cfg.tokenFile}"} "$@"
  fi
''
+ ''
  exec ${escapeShellArg "${cfg.package}/bin/fleetmesh"} agent --state ${escapeShellArg stateDir} ${escapeShellArgs flags} "$@"
''
