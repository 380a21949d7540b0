# Fake NixOS "system closures" for fleetmesh's tests, demo and benchmark: plain
# input-addressed derivations (builder /bin/sh, no nixpkgs) whose top path has a
# bin/switch-to-configuration that records each call ("<out> <mode>"), can wait for a gate
# file first ($FLEETMESH_FAKE_SWITCH_GATE, logging "<out> <mode> waiting")
# and can fail on purpose.
#
#   tag    makes the paths unique (one tag per closure a test wants)
#   fail   "1": switch-to-configuration exits 1 after printing a reason
#   deps   number of dependency paths; each is `mb` MiB of pseudo-random data
#   shared a tag for one dependency shared between closures with the same value
{ tag, fail ? "0", deps ? 1, kb ? 1, shared ? "" }:
let
  mk = attrs: derivation ({
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
  } // attrs);
  dep = i: mk {
    name = "fake-dep-${tag}-${toString i}";
    args = [ "-c" "head -c ${toString kb}K /dev/urandom > $out" ];
  };
  sharedDep = mk {
    name = "fake-shared-${shared}";
    args = [ "-c" "echo shared ${shared} > $out" ];
  };
  depList = builtins.genList dep deps ++ (if shared == "" then [ ] else [ sharedDep ]);
in mk {
  name = "nixos-system-${tag}";
  inherit fail;
  deps = depList;
  args = [ "-c" ''
    set -e
    mkdir -p $out/bin
    for d in $deps; do echo $d; done > $out/deps
    echo ${tag} > $out/tag
    cat > $out/bin/switch-to-configuration <<EOS
    #!/bin/sh
    log="\''${FLEETMESH_FAKE_SWITCH_LOG:-/tmp/fleetmesh-fake-switch.log}"
    # a test that kills the agent mid-switch holds the switch here until it creates the gate
    gate="\''${FLEETMESH_FAKE_SWITCH_GATE:-}"
    if [ -n "\$gate" ]; then
      echo "$out \$1 waiting" >> "\$log"
      while [ ! -e "\$gate" ]; do sleep 0.05; done
    fi
    echo "$out \$1" >> "\$log"
    echo "switching to ${tag} (\$1)"
    if [ "$fail" = 1 ]; then echo "switch-to-configuration: activation of ${tag} failed on purpose" >&2; exit 1; fi
    exit 0
    EOS
    chmod +x $out/bin/switch-to-configuration
  '' ];
}
