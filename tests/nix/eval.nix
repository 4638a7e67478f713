# Evaluates the hail NixOS module with the real module system (nixpkgs' lib) and small stand-ins
# for the NixOS options it sets, and returns what a test asserts on.
#   nix-instantiate --eval --strict --json tests/nix/eval.nix \
#     --argstr nixpkgsLib "$NIXPKGS_LIB" --arg config '{ services.hail.web.jobUri = "https://h/job/p/j/web"; }'
{
  # Directory holding nixpkgs' lib (its default.nix).
  nixpkgsLib,
  # A NixOS module: the configuration under test.
  config,
  # Which hail module to load: "module" (nixos/module.nix) or "default" (nixos/default.nix,
  # what the flake exports).
  entry ? "module",
}:

let
  lib = import nixpkgsLib;

  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}";
  };

  pkgs = {
    hail = fakePackage "hail-from-pkgs";
    nix = fakePackage "nix";
    # What nixos/default.nix uses to build hail: records which file it was given.
    callPackage = file: _args: fakePackage "hail-from-${baseNameOf file}";
  };

  # The NixOS options the module sets, declared loosely: the tests look at the values it gives them.
  nixosStandIns = {
    options = {
      systemd.services = lib.mkOption {
        type = lib.types.attrsOf (lib.types.submodule { freeformType = lib.types.attrsOf lib.types.anything; });
        default = { };
      };
      systemd.packages = lib.mkOption {
        type = lib.types.listOf lib.types.package;
        default = [ ];
      };
      assertions = lib.mkOption {
        type = lib.types.listOf lib.types.unspecified;
        default = [ ];
      };
      warnings = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
      };
      nix.package = lib.mkOption {
        type = lib.types.package;
        default = pkgs.nix;
      };
    };
  };

  evaluated = lib.evalModules {
    modules = [
      nixosStandIns
      (if entry == "default" then ../../nixos/default.nix else ../../nixos/module.nix)
      { _module.args.pkgs = pkgs; }
      config
    ];
  };
  cfg = evaluated.config;
in
{
  services = cfg.systemd.services;
  packages = map (p: p.name) cfg.systemd.packages;
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  inherit (cfg) warnings;
  instancePackages = lib.mapAttrs (_: inst: inst.package.name) cfg.services.hail;
}
