{
  description = "fleetmesh: fleet manager for devices behind NAT (coordinator, agent, relay)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The folders the CLI loads at run time (bin/ and everything it imports;
      # test/packaging checks the list against the imports). Tests, benchmarks,
      # scripts and docs stay out of the package.
      runtimeDirs = [
        "admin"
        "agent"
        "bin"
        "coordinator"
        "keys"
        "lib"
        "net"
        "protocol"
        "relay"
      ];

      # See nix/npm-lock.nix: adds the tarball URLs this lockfile leaves out and
      # drops the devDependencies.
      npmLock = import ./nix/npm-lock.nix {
        package = lib.importJSON ./package.json;
        packageLock = lib.importJSON ./package-lock.json;
      };

      buildFleetmesh =
        pkgs:
        let
          nodejs = pkgs.nodejs_24;
        in
        pkgs.buildNpmPackage {
          pname = "fleetmesh";
          version = (lib.importJSON ./package.json).version;

          src = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions (
              [
                ./package.json
                ./package-lock.json
              ]
              ++ map (dir: ./. + "/${dir}") runtimeDirs
            );
          };

          inherit nodejs;
          # No npmDepsHash: importNpmLock fetches each package by the hash in
          # the lockfile.
          npmDeps = pkgs.importNpmLock {
            npmRoot = ./.;
            inherit (npmLock) package packageLock;
          };
          npmConfigHook = pkgs.importNpmLock.npmConfigHook;
          npmInstallFlags = [ "--omit=dev" ];
          # No runtime dependency has an install script; run none.
          npmRebuildFlags = [ "--ignore-scripts" ];
          # Node 24 runs the TypeScript sources directly (it strips the types).
          dontNpmBuild = true;

          nativeBuildInputs = [ pkgs.makeWrapper ];

          # Not npm's layout: Node refuses to strip types from files under a
          # node_modules directory, so the sources go to lib/fleetmesh, not
          # lib/node_modules/fleetmesh. bin/fleetmesh.js imports bin/main.ts
          # directly on Node 24 and later.
          installPhase = ''
            runHook preInstall
            mkdir -p $out/lib/fleetmesh $out/bin
            cp -r ${lib.concatStringsSep " " runtimeDirs} node_modules $out/lib/fleetmesh/
            # npmConfigHook swapped in a package.json and a hidden lockfile that
            # name every tarball's store path; keep the originals instead.
            cp .package.json.orig $out/lib/fleetmesh/package.json
            rm -f $out/lib/fleetmesh/node_modules/.package-lock.json
            makeWrapper ${nodejs}/bin/node $out/bin/fleetmesh \
              --add-flags $out/lib/fleetmesh/bin/fleetmesh.js
            runHook postInstall
          '';

          meta = {
            description = "Fleet manager for devices behind NAT: coordinator, agent and relay on one libp2p mesh";
            license = lib.licenses.mit;
            mainProgram = "fleetmesh";
            platforms = lib.platforms.linux;
          };
        };
    in
    {
      packages = forAllSystems (pkgs: rec {
        fleetmesh = buildFleetmesh pkgs;
        default = fleetmesh;
      });

      # nix/module.nix with every role's package defaulting to this flake's build.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          config.services.fleetmesh = lib.genAttrs [ "agent" "coordinator" "relay" ] (_: {
            package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          });
        };
      nixosModules.fleetmesh = self.nixosModules.default;
    };
}
