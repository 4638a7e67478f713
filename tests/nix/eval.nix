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
  # Where the stand-ins of pkgs.hail and pkgs.nix are (the system tests point them at the
  # container's own hail and Nix).
  hailOut ? "${builtins.storeDir}/00000000000000000000000000000000-hail-from-pkgs",
  nixOut ? "${builtins.storeDir}/00000000000000000000000000000000-nix",
}:

let
  lib = import nixpkgsLib;

  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}";
  };

  pkgs = {
    hail = fakePackage "hail-from-pkgs" // { outPath = hailOut; };
    nix = fakePackage "nix" // { outPath = nixOut; };
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

  # A service's unit file as NixOS writes it (nixpkgs nixos/lib/systemd-lib.nix, serviceToUnit
  # and commonUnitText): [Unit] from unitConfig; [Service] with one quoted `Environment=` per
  # variable (PATH made from `path`), then the switch's X- markers, then serviceConfig. Keys in
  # name order, a list giving one line per element, values pasted as they are.
  toOption = x: if x == true then "true" else if x == false then "false" else toString x;
  attrsToSection =
    as:
    lib.concatStrings (
      lib.concatLists (
        lib.mapAttrsToList (
          name: value: map (x: "${name}=${toOption x}\n") (if lib.isList value then value else [ value ])
        ) as
      )
    );
  unitText =
    def:
    let
      path = def.path or [ ];
      env =
        (def.environment or { })
        // lib.optionalAttrs (path != [ ]) {
          PATH = "${lib.makeBinPath path}:${lib.makeSearchPathOutput "bin" "sbin" path}";
        };
    in
    ''
      [Unit]
      ${attrsToSection (def.unitConfig or { })}
      [Service]
    ''
    + lib.concatMapStrings (n: "Environment=${builtins.toJSON "${n}=${env.${n}}"}\n") (lib.attrNames env)
    + (
      if def.reloadIfChanged or false then
        "X-ReloadIfChanged=true\n"
      else if !(def.restartIfChanged or true) then
        "X-RestartIfChanged=false\n"
      else
        ""
    )
    + lib.optionalString (!(def.stopIfChanged or true)) "X-StopIfChanged=false\n"
    + attrsToSection (def.serviceConfig or { });
in
{
  services = cfg.systemd.services;
  # Unit file name -> { text; wantedBy; }, as NixOS lays them out in /etc/systemd/system.
  units = lib.mapAttrs' (
    name: def:
    lib.nameValuePair "${name}.service" {
      text = unitText def;
      wantedBy = def.wantedBy or [ ];
    }
  ) cfg.systemd.services;
  packages = map (p: p.name) cfg.systemd.packages;
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  inherit (cfg) warnings;
  instancePackages = lib.mapAttrs (_: inst: inst.package.name) cfg.services.hail;
}
