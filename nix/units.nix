# The systemd settings of the three fleetmesh daemons, kept in one place.
#
# nix/module.nix builds its services from this file (adding ExecStart and the
# StateDirectory for a non-default stateDir), and packaging/systemd/*.service are
# the same settings written out as plain unit files for other distributions.
# test/packaging/nix-files.test.ts evaluates the module and checks, key by key,
# that the two agree; change both together. Why each daemon gets the hardening it
# gets is explained in the comments of the plain unit files.
#
# Booleans are written "yes"/"no" as strings, exactly as in the unit files, so
# what NixOS renders is what the plain units say.
let
  unit = role: description: {
    Description = "fleetmesh ${role}: ${description}";
    # The daemons dial and announce addresses at start; wait for the network.
    Wants = [ "network-online.target" ];
    After = [ "network-online.target" ];
  };

  install = {
    WantedBy = [ "multi-user.target" ];
  };

  # Every daemon: one state directory under /var/lib, extra flags from an
  # optional environment file, restarts after a crash, a clean SIGTERM stop.
  base = role: {
    Type = "exec";
    EnvironmentFile = "-/etc/fleetmesh/${role}.env";
    Restart = "on-failure";
    RestartSec = "5s";
    KillSignal = "SIGTERM";
    TimeoutStopSec = "30s";
    StateDirectory = "fleetmesh-${role}";
    StateDirectoryMode = "0700";
  };

  # The coordinator and the relay: network daemons that write only their state
  # directory, run as a throwaway user with no capabilities in a read-only view
  # of the system. No MemoryDenyWriteExecute: V8's JIT needs writable code pages.
  sandboxed = {
    DynamicUser = "yes";
    UMask = "0077";
    ProtectSystem = "strict";
    ProtectHome = "yes";
    PrivateTmp = "yes";
    PrivateDevices = "yes";
    ProtectKernelTunables = "yes";
    ProtectKernelModules = "yes";
    ProtectKernelLogs = "yes";
    ProtectControlGroups = "yes";
    ProtectClock = "yes";
    ProtectHostname = "yes";
    ProtectProc = "invisible";
    NoNewPrivileges = "yes";
    RestrictAddressFamilies = "AF_INET AF_INET6 AF_UNIX AF_NETLINK";
    RestrictNamespaces = "yes";
    RestrictRealtime = "yes";
    RestrictSUIDSGID = "yes";
    LockPersonality = "yes";
    RemoveIPC = "yes";
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    SystemCallErrorNumber = "EPERM";
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
  };
in
{
  coordinator = {
    unit = unit "coordinator" "control plane and binary cache of a fleet";
    service = base "coordinator" // sandboxed;
    inherit install;
  };
  relay = {
    unit = unit "relay" "public circuit relay, fleet DHT and NAT observers";
    service = base "relay" // sandboxed;
    inherit install;
  };
  # The agent is the deployment tool of its machine: it runs as root, with no
  # sandbox, because everything it starts (nix-env --set, switch-to-configuration,
  # the activation script, bootloader installation, activate hooks) inherits its
  # namespaces, seccomp filter, capability set and no_new_privs, and must see and
  # change the real system exactly as `nixos-rebuild switch` from a root shell does.
  agent = {
    unit = unit "agent" "applies signed updates to this machine";
    service = base "agent";
    inherit install;
  };
}
