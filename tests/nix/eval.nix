# Evaluates the hail NixOS module with the real module system (nixpkgs' lib) and NixOS's systemd
# service options (its own code when `nixosLib` names it, else the stand-in ./nixos-systemd.nix),
# and returns what a test asserts on.
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
  # A directory holding NixOS's own systemd-lib.nix, systemd-unit-options.nix and
  # systemd-types.nix (nixpkgs' nixos/lib), or "" for the stand-in.
  nixosLib ? "",
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
    # NixOS's default path for every service.
    coreutils = fakePackage "coreutils";
    findutils = fakePackage "findutils";
    gnugrep = fakePackage "gnugrep";
    gnused = fakePackage "gnused";
    systemd = fakePackage "systemd";
    # What the documentation's examples use.
    curl = fakePackage "curl";
    # Used by NixOS's code for what the tests do not read (unit files, job scripts).
    writeText = name: _text: fakePackage name;
    runCommand = name: _env: _script: fakePackage name;
    buildPackages.xorg.lndir = fakePackage "lndir";
  };

  # Calls a function with the arguments of `args` it takes (the files' arguments changed over
  # NixOS releases).
  callWith = args: f: f (builtins.intersectAttrs (builtins.functionArgs f) args);

  # NixOS's systemd service options: { servicesType; serviceText = def: "…"; }.
  systemd =
    if nixosLib == "" then
      import ./nixos-systemd.nix {
        inherit lib pkgs;
        nixosConfig = cfg;
      }
    else
      let
        systemdUtils = {
          lib = callWith {
            inherit lib pkgs;
            config = cfg;
            utils = { };
          } (import "${nixosLib}/systemd-lib.nix");
          unitOptions = import "${nixosLib}/systemd-unit-options.nix" { inherit lib systemdUtils; };
          types = callWith { inherit lib pkgs systemdUtils; } (import "${nixosLib}/systemd-types.nix");
        };
      in
      {
        servicesType = systemdUtils.types.services;
        serviceText = def: (systemdUtils.lib.serviceToUnit def).text;
      };

  # The NixOS options the module sets besides systemd.services, declared loosely.
  nixosStandIns = {
    # Other NixOS options the documentation's examples set (nix.settings, services.prometheus).
    config._module.freeformType = lib.types.attrsOf lib.types.anything;
    options = {
      systemd.services = lib.mkOption {
        type = systemd.servicesType;
        default = { };
      };
      systemd.packages = lib.mkOption {
        type = lib.types.listOf lib.types.package;
        default = [ ];
      };
      systemd.globalEnvironment = lib.mkOption {
        type = lib.types.attrsOf (lib.types.nullOr (lib.types.oneOf [ lib.types.str lib.types.path lib.types.package ]));
        default = { };
      };
      systemd.package = lib.mkOption {
        type = lib.types.package;
        default = pkgs.systemd;
      };
      systemd.enableStrictShellChecks = lib.mkOption {
        type = lib.types.bool;
        default = false;
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
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
in
# As NixOS, which builds nothing when an assertion fails.
if failedAssertions != [ ] then
  { inherit failedAssertions; }
else
{
  # What the module set, as NixOS merged it.
  services = lib.mapAttrs (
    _: def:
    {
      inherit (def)
        description
        after
        wants
        wantedBy
        unitConfig
        serviceConfig
        environment
        restartIfChanged
        reloadIfChanged
        stopIfChanged
        overrideStrategy
        restartTriggers
        ;
      path = map toString def.path;
    }
  ) cfg.systemd.services;
  # Unit file name -> { text; wantedBy; }, as NixOS lays them out in /etc/systemd/system.
  units = lib.mapAttrs' (
    name: def:
    lib.nameValuePair "${name}.service" {
      text = systemd.serviceText def;
      inherit (def) wantedBy;
    }
  ) cfg.systemd.services;
  packages = map (p: p.name) cfg.systemd.packages;
  inherit failedAssertions;
  inherit (cfg) warnings;
  instancePackages = lib.mapAttrs (_: inst: inst.package.name) cfg.services.hail;
  # The options of services.hail.<name>.
  instanceOptions = lib.filter (n: n != "_module") (
    lib.attrNames (evaluated.options.services.hail.type.getSubOptions [ ])
  );
}
