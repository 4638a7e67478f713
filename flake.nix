{
  description = "hail: pull-based continuous deployment of Nix profiles from Hydra";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The whole Cargo workspace, tests included, for the lint checks.
      workspaceSource = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.unions [
          ./Cargo.toml
          ./Cargo.lock
          ./build.rs
          ./src
          ./testkit
          (lib.fileset.maybeMissing ./tests)
          (lib.fileset.maybeMissing ./benches)
          (lib.fileset.maybeMissing ./examples)
          (lib.fileset.maybeMissing ./rustfmt.toml)
          (lib.fileset.maybeMissing ./clippy.toml)
        ];
      };
    in
    {
      # `pkgs.hail`, built with the nixpkgs it is applied to.
      overlays.default = final: _prev: { hail = final.callPackage ./nix/package.nix { }; };

      # services.hail.<name>; every instance defaults to hail built with the system's pkgs, so no
      # overlay is needed.
      nixosModules.default = {
        imports = [ ./nixos ];
      };
      nixosModules.hail = self.nixosModules.default;

      # Builds a manager profile: a profile of hail instances that a hail instance deploys.
      lib.mkManagerProfile = import ./nix/manager.nix;

      packages = forAllSystems (pkgs: rec {
        hail = pkgs.callPackage ./nix/package.nix { };
        default = hail;
      });

      checks = forAllSystems (
        pkgs:
        let
          hail = self.packages.${pkgs.stdenv.hostPlatform.system}.hail;
        in
        {
          package = hail;

          # The unit tests (tests/ is not in the package's source; those need Nix and systemd).
          unit = hail.overrideAttrs {
            pname = "hail-unit-tests";
            doCheck = true;
          };

          clippy = hail.overrideAttrs (old: {
            pname = "hail-clippy";
            src = workspaceSource;
            nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
            buildPhase = ''
              runHook preBuild
              cargo clippy --workspace --all-targets --offline -- -D warnings
              runHook postBuild
            '';
            doCheck = false;
            installPhase = "touch $out";
          });

          fmt =
            pkgs.runCommand "hail-fmt"
              {
                nativeBuildInputs = [
                  pkgs.cargo
                  pkgs.rustfmt
                ];
              }
              ''
                cp -r ${workspaceSource} src && chmod -R u+w src && cd src
                cargo fmt --all --check
                touch $out
              '';

          # The alert rules and their unit tests, as the package installs them. getOutput: promtool
          # is in prometheus' `cli` output where nixpkgs splits it off.
          monitoring =
            pkgs.runCommand "hail-monitoring"
              { nativeBuildInputs = [ (lib.getOutput "cli" pkgs.prometheus) ]; }
              ''
                cd ${hail}/share/hail/monitoring
                promtool check rules alerts.yml
                promtool test rules alerts.test.yml
                touch $out
              '';

          vm-basic = pkgs.testers.runNixOSTest ./nix/tests/basic.nix;
          vm-system = pkgs.testers.runNixOSTest ./nix/tests/system.nix;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.hail ];
          packages = [
            pkgs.cargo-nextest
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            pkgs.nixfmt-tree
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
