# NixOS module for fleetmesh: services.fleetmesh.{coordinator,agent,relay}.
#
# The flake's nixosModules.default imports this file and sets each `package` to
# the flake's own build; imported on its own, `package` defaults to
# pkgs.fleetmesh (from an overlay, say).
#
# The unit settings (ordering, restarts, hardening) come from ./units.nix, the
# same settings packaging/systemd/*.service spell out for other distributions;
# see there for why the coordinator and relay get a full sandbox and the agent,
# which runs switch-to-configuration, none.
#
# Every service also reads the optional /etc/fleetmesh/<role>.env and appends
# its FLEETMESH_ARGS to the command line, as the plain units do: a place for
# flags that should not be in the (world-readable) Nix store.
#
# Example:
#
#   services.fleetmesh.agent = {
#     enable = true;
#     tokenFile = "/run/secrets/fleetmesh-token";
#     bootstrap = [ "/dns4/relay.example.net/tcp/4001/p2p/12D3Koo..." ];
#   };
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkMerge
    types
    concatMap
    concatStringsSep
    hasPrefix
    removePrefix
    literalExpression
    ;

  units = import ./units.nix;
  cfg = config.services.fleetmesh;

  # One ExecStart argument, quoted for systemd: inside double quotes \ and "
  # are escaped, and % (specifiers) and $ (variables) are doubled.
  execArg =
    arg:
    "\"" + builtins.replaceStrings [ "\\" "\"" "%" "$" ] [ "\\\\" "\\\"" "%%" "$$" ] (toString arg) + "\"";
  repeated = flag: values: concatMap (value: [ flag value ]) values;

  commonOptions = role: {
    enable = mkEnableOption "the fleetmesh ${role}";
    package = mkOption {
      type = types.package;
      default =
        pkgs.fleetmesh or (throw "services.fleetmesh.${role}.package: pkgs.fleetmesh does not exist; import the flake's nixosModules.default or set the package");
      defaultText = literalExpression "pkgs.fleetmesh";
      description = "The fleetmesh package to run.";
    };
    stateDir = mkOption {
      type = types.path;
      default = "/var/lib/fleetmesh-${role}";
      description = ''
        State directory of the ${role} (its identity key lives there). It must
        be under /var/lib: systemd creates it as the unit's StateDirectory, with
        the right owner and mode 0700.
      '';
    };
    extraFlags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--json" ];
      description = "More command-line flags for `fleetmesh ${role}`.";
    };
  };

  multiaddrs =
    what:
    mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Multiaddrs ${what}.";
    };

  # The systemd service of a role: the settings of ./units.nix, this role's
  # StateDirectory, and the command line.
  service = role: roleCfg: execStart: {
    description = units.${role}.unit.Description;
    wants = units.${role}.unit.Wants;
    after = units.${role}.unit.After;
    wantedBy = units.${role}.install.WantedBy;
    serviceConfig = units.${role}.service // {
      ExecStart = "${execStart} $FLEETMESH_ARGS";
      StateDirectory = removePrefix "/var/lib/" (toString roleCfg.stateDir);
    };
  };

  stateDirAssertion = role: {
    assertion =
      hasPrefix "/var/lib/" (toString cfg.${role}.stateDir) && toString cfg.${role}.stateDir != "/var/lib/";
    message = "services.fleetmesh.${role}.stateDir must be a directory under /var/lib/ (systemd's StateDirectory), not ${toString cfg.${role}.stateDir}";
  };

  command =
    role: args:
    concatStringsSep " " (
      map execArg (
        [
          "${cfg.${role}.package}/bin/fleetmesh"
          role
          "--state"
          (toString cfg.${role}.stateDir)
        ]
        ++ args
      )
    );

  coordinatorArgs =
    repeated "--listen" cfg.coordinator.listen
    ++ repeated "--announce" cfg.coordinator.announce
    ++ repeated "--bootstrap" cfg.coordinator.bootstrap
    ++ repeated "--reserve-on" cfg.coordinator.reserveOn
    ++ cfg.coordinator.extraFlags;

  relayArgs =
    repeated "--listen" cfg.relay.listen
    ++ repeated "--announce" cfg.relay.announce
    ++ repeated "--bootstrap" cfg.relay.bootstrap
    ++ (
      if cfg.relay.observerPorts == null then
        [ ]
      else
        [
          "--observer-ports"
          (if cfg.relay.observerPorts == [ ] then "none" else concatStringsSep "," (map toString cfg.relay.observerPorts))
        ]
    )
    ++ cfg.relay.extraFlags;

  agentStart = pkgs.writeShellScript "fleetmesh-agent-start" (
    import ./agent-start.nix {
      inherit lib;
      cfg = cfg.agent;
    }
  );
in
{
  options.services.fleetmesh = {
    coordinator = commonOptions "coordinator" // {
      listen = multiaddrs "to listen on (`--listen`; the daemon's default is /ip4/0.0.0.0/tcp/4001)";
      announce = multiaddrs "to announce instead of the listen addresses (`--announce`)";
      bootstrap = multiaddrs "of relays to join the fleet DHT through, ending in /p2p/<peer id> (`--bootstrap`)";
      reserveOn = multiaddrs "of relays to hold a reservation on, for a coordinator behind NAT (`--reserve-on`)";
    };

    relay = commonOptions "relay" // {
      listen = multiaddrs "to listen on (`--listen`; the daemon's default is /ip4/0.0.0.0/tcp/4001)";
      announce = multiaddrs "to announce instead of the listen addresses (`--announce`)";
      bootstrap = multiaddrs "of other relays to join the fleet DHT through (`--bootstrap`)";
      observerPorts = mkOption {
        type = types.nullOr (types.listOf types.port);
        default = null;
        example = [
          4002
          4003
        ];
        description = ''
          TCP ports of the NAT observers (`--observer-ports`): null keeps the
          daemon's default (4002, 4003), [ ] runs none.
        '';
      };
    };

    agent = commonOptions "agent" // {
      bootstrap = multiaddrs "of relays (or coordinators) to find the coordinator through, ending in /p2p/<peer id> (`--bootstrap`)";
      tokenFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/fleetmesh-token";
        description = ''
          File holding the enrollment token (from `fleetmesh enroll`), read on
          the first start only, while the state directory holds no
          enrollment.json. Give a path outside the Nix store as a string: a
          Nix path literal would copy the token into the world-readable store.
        '';
      };
      nixProfile = mkOption {
        type = types.str;
        default = "/nix/var/nix/profiles/system";
        description = "Nix profile the agent sets to a new system closure (`--nix-profile`).";
      };
      keepGenerations = mkOption {
        type = types.int;
        default = 5;
        description = "How many generations of the profile the agent keeps (`--nix-keep-generations`).";
      };
    };
  };

  config = mkMerge [
    (mkIf cfg.coordinator.enable {
      assertions = [ (stateDirAssertion "coordinator") ];
      systemd.services.fleetmesh-coordinator =
        service "coordinator" cfg.coordinator (command "coordinator" coordinatorArgs);
    })

    (mkIf cfg.relay.enable {
      assertions = [ (stateDirAssertion "relay") ];
      systemd.services.fleetmesh-relay = service "relay" cfg.relay (command "relay" relayArgs);
    })

    (mkIf cfg.agent.enable {
      assertions = [ (stateDirAssertion "agent") ];
      systemd.services.fleetmesh-agent = service "agent" cfg.agent (execArg agentStart) // {
        # nix-env and nix-store for the system profile, tar and gzip for archive
        # payloads, systemctl and systemd-run; then the current system's tools
        # for activate hooks and health checks, as a root shell would have them.
        # switch-to-configuration and the activation script set their own PATH.
        path = [
          config.nix.package
          config.systemd.package
          pkgs.coreutils
          pkgs.gnutar
          pkgs.gzip
          "/run/current-system/sw"
        ];
        # switch-to-configuration runs as a child of the agent, in the agent's
        # cgroup: restarting the agent because its unit changed would kill the
        # switch halfway. A new agent version starts with the next restart or
        # boot instead.
        restartIfChanged = false;
      };
    })
  ];
}
