# Stands in for NixOS's systemd service options where nixpkgs is not at hand (CI): the type of
# `systemd.services` and the unit text NixOS writes for a service, applying the checks and merges
# NixOS applies. Written from nixpkgs' nixos/lib/systemd-unit-options.nix (the option types,
# `unitOption`, checkService), systemd-lib.nix (unitConfig, stage2ServiceConfig, serviceToUnit,
# attrsToSection) and systemd-types.nix (`services`). tests/nix_module.rs holds its output
# against those files' when NIXOS_LIB names a directory holding them.
{
  lib,
  pkgs,
  # The NixOS configuration (systemd.globalEnvironment, systemd.package).
  nixosConfig,
}:

let
  inherit (lib) mkOption types;

  # A unit name such as `network-online.target`.
  unitName = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  unitNames = mkOption {
    type = types.listOf unitName;
    default = [ ];
  };

  # One setting of a section: a single value, or a list for a setting written on several lines.
  # Definitions of a lower priority are dropped; lists are concatenated (a single value beside a
  # list counts as a one-element list); single values must all be equal.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        kept = lib.filterOverrides defs;
      in
      if lib.any (d: lib.isList d.value) kept then
        lib.concatMap (d: lib.toList d.value) kept
      else
        lib.mergeEqualOption loc kept;
  };

  # checkService: `Type=` and `Restart=` must be one of these, in each definition of a service's
  # serviceConfig, after unwrapping one mkOverride or mkIf. A list is not one of them.
  allowedValues = [
    {
      key = "Type";
      values = [
        "exec"
        "simple"
        "forking"
        "oneshot"
        "dbus"
        "notify"
        "notify-reload"
        "idle"
      ];
    }
    {
      key = "Restart";
      values = [
        "no"
        "on-success"
        "on-failure"
        "on-abnormal"
        "on-abort"
        "always"
      ];
    }
  ];
  unwrapped = v: if lib.elem (v._type or "") [ "override" "if" ] then v.content else v;
  checkService =
    attrs:
    let
      errors = lib.concatMap (
        { key, values }:
        lib.optional (
          attrs ? ${key} && !lib.elem (unwrapped attrs.${key}) values
        ) "Systemd Service field `${key}' cannot have value `${toString (unwrapped attrs.${key})}'."
      ) allowedValues;
    in
    if errors == [ ] then true else builtins.trace (lib.concatStringsSep "\n" errors) false;

  serviceModule =
    {
      name,
      config,
      options,
      ...
    }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        overrideStrategy = mkOption {
          type = types.enum [
            "asDropinIfExists"
            "asDropin"
          ];
          default = "asDropinIfExists";
        };
        description = mkOption {
          type = types.singleLineStr;
          default = "";
        };
        documentation = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        requires = unitNames;
        wants = unitNames;
        after = unitNames;
        before = unitNames;
        bindsTo = unitNames;
        partOf = unitNames;
        conflicts = unitNames;
        requisite = unitNames;
        onFailure = unitNames;
        onSuccess = unitNames;
        wantedBy = unitNames;
        requiredBy = unitNames;
        aliases = unitNames;
        startLimitBurst = mkOption { type = types.int; };
        startLimitIntervalSec = mkOption { type = types.int; };
        unitConfig = mkOption {
          type = types.attrsOf unitOption;
          default = { };
        };
        serviceConfig = mkOption {
          type = types.addCheck (types.attrsOf unitOption) checkService;
          default = { };
        };
        environment = mkOption {
          type = types.attrsOf (
            types.nullOr (
              types.oneOf [
                types.str
                types.path
                types.package
              ]
            )
          );
          default = { };
        };
        path = mkOption {
          type = types.listOf (
            types.oneOf [
              types.package
              types.str
            ]
          );
          default = [ ];
        };
        restartTriggers = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        reloadTriggers = mkOption {
          type = types.listOf unitOption;
          default = [ ];
        };
        restartIfChanged = mkOption {
          type = types.bool;
          default = true;
        };
        reloadIfChanged = mkOption {
          type = types.bool;
          default = false;
        };
        stopIfChanged = mkOption {
          type = types.bool;
          default = true;
        };
      };

      config = {
        # The dependency options become [Unit] settings at normal priority, space-separated.
        unitConfig =
          lib.mapAttrs' (option: key: lib.nameValuePair key (toString config.${option})) (
            lib.filterAttrs (option: _: config.${option} != [ ]) {
              requires = "Requires";
              wants = "Wants";
              after = "After";
              before = "Before";
              bindsTo = "BindsTo";
              partOf = "PartOf";
              conflicts = "Conflicts";
              requisite = "Requisite";
              documentation = "Documentation";
              onFailure = "OnFailure";
              onSuccess = "OnSuccess";
            }
          )
          // lib.optionalAttrs (config.description != "") { Description = config.description; }
          // lib.optionalAttrs options.startLimitIntervalSec.isDefined {
            StartLimitIntervalSec = toString config.startLimitIntervalSec;
          }
          // lib.optionalAttrs options.startLimitBurst.isDefined {
            StartLimitBurst = toString config.startLimitBurst;
          }
          # The triggers go into a file of their own, which the unit names: a changed trigger
          # changes the unit, and a switch restarts it.
          // lib.optionalAttrs (config.restartTriggers != [ ]) {
            X-Restart-Triggers = "${pkgs.writeText "X-Restart-Triggers-${name}" (
              toString (map (x: if lib.isPath x then "${x}" else x) (lib.flatten config.restartTriggers))
            )}";
          };
        # Every service's PATH ends with these.
        path = lib.mkAfter [
          pkgs.coreutils
          pkgs.findutils
          pkgs.gnugrep
          pkgs.gnused
          nixosConfig.systemd.package
        ];
        environment.PATH = lib.mkIf (
          config.path != [ ]
        ) "${lib.makeBinPath config.path}:${lib.makeSearchPathOutput "bin" "sbin" config.path}";
      };
    };

  # A section's lines: keys in name order, a list giving one line per element.
  toOption =
    x:
    if x == true then
      "true"
    else if x == false then
      "false"
    else
      toString x;
  attrsToSection =
    attrs:
    lib.concatStrings (
      lib.concatLists (
        lib.mapAttrsToList (key: value: map (x: "${key}=${toOption x}\n") (lib.toList value)) attrs
      )
    );
in
{
  servicesType = types.attrsOf (types.submodule serviceModule);

  # The text of `<name>.service` as NixOS writes it: [Unit], then [Service] with one quoted
  # `Environment=` line per variable (systemd.globalEnvironment first, the service's own winning),
  # the switch's X- markers, serviceConfig; then [Install] when wantedBy is set.
  serviceText =
    def:
    let
      env = nixosConfig.systemd.globalEnvironment // def.environment;
    in
    ''
      [Unit]
      ${attrsToSection def.unitConfig}
      [Service]
    ''
    + lib.concatMapStrings (
      n: lib.optionalString (env.${n} != null) "Environment=${builtins.toJSON "${n}=${env.${n}}"}\n"
    ) (lib.attrNames env)
    + (
      if def.reloadIfChanged then
        "X-ReloadIfChanged=true\n"
      else if !def.restartIfChanged then
        "X-RestartIfChanged=false\n"
      else
        ""
    )
    + lib.optionalString (!def.stopIfChanged) "X-StopIfChanged=false\n"
    + attrsToSection def.serviceConfig
    + lib.optionalString (def.wantedBy != [ ]) ''

      [Install]
      WantedBy=${lib.concatStringsSep " " def.wantedBy}
    '';
}
