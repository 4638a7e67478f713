# services.hail.<name>: one hail agent per Hydra job, run as the systemd unit `hail@<name>`.
#
# Each instance is a complete unit `hail@<name>.service`, generated from the template that the
# project ships, `systemd/hail@.service` (the one source of the unit's settings): its sections and
# lines become the instance's `description`, `after`, `wants`, `unitConfig`, `serviceConfig` and
# `wantedBy`, as defaults an operator's own settings add to (lists) or win over; the instance's own job,
# profile, credential and environment replace the template's `Environment=`, `EnvironmentFile=`,
# `LoadCredential=` and `ExecStart=`. A complete unit, not a drop-in on the template (the pattern of
# nixpkgs' `container@<name>`): when an instance is removed, disabled or renamed, the system switch
# sees its unit file gone and stops it, whatever version of the switch runs. What an instance's
# settings mean (variables, credential, command line, start timeout, and what is wrong with them)
# is nix/instance.nix, which the manager's instance sets use too.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    mkOption
    types
    literalExpression
    ;

  cfg = config.services.hail;
  enabled = lib.filterAttrs (_: inst: inst.enable) cfg;

  # The package that most enabled instances run (the lowest-named one on a tie): it provides
  # what the host has once, the template unit and the journal catalog.
  hostPackage =
    let
      packages = lib.mapAttrsToList (_: inst: inst.package) enabled;
      count = p: lib.length (lib.filter (q: q == p) packages);
    in
    lib.foldl' (a: p: if count p > count a then p else a) (lib.head packages) packages;

  # `journalctl -x` explains hail's MESSAGE_IDs with the package's catalog. NixOS takes only
  # units from systemd.packages, and its journalctl reads catalogs from systemd's own store
  # path instead of /usr/lib/systemd/catalog/ (nixpkgs, pkgs/os-specific/linux/systemd/
  # default.nix: `substituteInPlace src/libsystemd/sd-journal/catalog.c --replace
  # /usr/lib/systemd/catalog/ $out/lib/systemd/catalog/`) and from upstream's other directory,
  # /usr/local/lib/systemd/catalog/, left as it is; NixOS's journald.nix adds nothing to them.
  # So the catalog is copied into the latter (a copy: a link into the store would dangle once
  # collected) and the index rebuilt, at boot and when a switch changes the file.
  catalogService =
    let
      catalog = "${hostPackage}/lib/systemd/catalog/hail.catalog";
    in
    {
      description = "hail's journal message catalog";
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ catalog ];
      # A hail package from before the catalog existed has none: nothing to do.
      unitConfig.ConditionPathExists = catalog;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = [
          "${pkgs.coreutils}/bin/install -D -m 644 ${catalog} /usr/local/lib/systemd/catalog/hail.catalog"
          "${config.systemd.package}/bin/journalctl --update-catalog"
        ];
      };
    };

  # hail's own period syntax: a bare number is minutes; s, m, h are units.
  periodType = types.strMatching "0*[1-9][0-9]*[smh]?" // {
    description = "period string (minutes, or with a unit: 30s, 5m, 1h)";
  };
  # Timeouts need a unit (hail also accepts ms), and cannot be zero.
  durationType = types.strMatching "0*[1-9][0-9]*(ms|s|m|h)" // {
    description = "non-zero duration string (30s, 10m, 1h)";
  };

  # Values pasted into the unit file, escaped for their context. systemd reads `%` as a specifier
  # in every setting used here: `%%` is a literal `%`.
  escapePercent = lib.replaceStrings [ "%" ] [ "%%" ];
  # One ExecStart word: a C-style quoted string (a newline becomes `\n`), with `%` specifiers
  # and `$` variable expansion escaped, so an argument reaches hail exactly as written.
  escapeExecArg = arg: lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON arg);

  # The shipped template, parsed: { Unit = { Description = "…"; … }; Service = …; Install = …; }:
  # a key's value as written, or the list of its values when the template repeats the key, as
  # NixOS's `unitOption` type holds them (its checks, of `Type=` and `Restart=` for example, read
  # single values). Comments and blank lines are skipped; it has no continuation lines.
  templateText = builtins.readFile (../systemd + "/hail@.service");
  template =
    let
      lines = lib.filter (l: l != "" && !(lib.hasPrefix "#" l)) (
        map lib.trim (lib.splitString "\n" templateText)
      );
      step =
        acc: line:
        let
          section = builtins.match "\\[([A-Za-z]+)]" line;
          kv = builtins.match "([A-Za-z]+)=(.*)" line;
        in
        if section != null then
          acc // { current = builtins.head section; }
        else if kv != null && acc.current != null then
          let
            key = builtins.head kv;
            sec = acc.sections.${acc.current} or { };
          in
          acc
          // {
            sections = acc.sections // {
              ${acc.current} = sec // { ${key} = (sec.${key} or [ ]) ++ [ (lib.elemAt kv 1) ]; };
            };
          }
        else
          throw "systemd/hail@.service: cannot read the line `${line}`";
    in
    lib.mapAttrs (_: lib.mapAttrs (_: values: if lib.length values == 1 then lib.head values else values)) (
      lib.foldl' step {
        current = null;
        sections = { };
      } lines
    ).sections;

  # The words of a space-separated unit setting (`After=a.target b.service`), of every line.
  words = value: lib.concatMap (v: lib.filter (w: w != "") (lib.splitString " " v)) (lib.toList value);

  # [Unit] settings that NixOS writes from options of its own (`after`, `wants`, …), at normal
  # priority: the template's go through those options, so that an operator's
  # `systemd.services."hail@<name>".after = [ … ]` adds to them instead of replacing them.
  unitListOptions = {
    After = "after";
    Before = "before";
    BindsTo = "bindsTo";
    Conflicts = "conflicts";
    Documentation = "documentation";
    OnFailure = "onFailure";
    PartOf = "partOf";
    Requires = "requires";
    Requisite = "requisite";
    Wants = "wants";
  };

  # Template lines every instance replaces: its own environment and command. No
  # `EnvironmentFile=`: on NixOS the module's settings are the only ones (a leftover
  # /etc/hail/<name>.env would otherwise override them). The template's `LoadCredential=` and
  # `TimeoutStartSec=` stay unless the instance sets its own.
  instanceKeys = [
    "Environment"
    "EnvironmentFile"
    "ExecStart"
  ];

  # The instance's unit settings and problems, shared with the manager (see the top).
  render =
    name: inst:
    import ../nix/instance.nix {
      inherit name;
      inherit (inst)
        jobUri
        enable
        package
        profile
        pollPeriod
        netrcFile
        activationTimeout
        realiseTimeout
        httpTimeout
        metricsFile
        keepGenerations
        healthCheck
        healthInterval
        healthTimeout
        confirmTimeout
        onSuccess
        onFailure
        hookTimeout
        minBuildAge
        rolloutSpread
        allowDowngrade
        gate
        gateDepth
        system
        switchAction
        reboot
        rebootWindow
        extraArgs
        environment
        restartIfChanged
        ;
    };

  # What the module gives hail@<name>: each value as written into the unit file.
  unitOf =
    name: inst:
    let
      unit = render name inst;
      execStart = lib.concatMapStringsSep " " escapeExecArg unit.execStart;
      credentials = lib.mapAttrsToList (id: file: "${id}:${escapePercent file}") unit.credentials;
      environment = lib.mapAttrs (_: escapePercent) unit.environment;
      # A digest of what NixOS writes into the unit's [Service] section, read from the final
      # configuration: every `Environment=` line (PATH from the service's `path`, NixOS's default
      # path included, and systemd.globalEnvironment) and every other setting, whoever set them.
      # hail compares the one it runs with to the unit's current one when the switch reloads it,
      # and restarts itself when they differ (services.hail.<name>.restartIfChanged). [Unit]
      # settings (ordering, start limits) apply without a restart.
      final = config.systemd.services."hail@${name}";
      digest = builtins.substring 0 16 (
        builtins.hashString "sha256" (
          builtins.toJSON {
            environment = config.systemd.globalEnvironment // removeAttrs final.environment [ "HAIL_UNIT_CONFIG" ];
            inherit (final) serviceConfig;
            # What NixOS's switch would restart for, were the instance not reloaded instead.
            triggers = map toString (final.restartTriggers ++ final.reloadTriggers);
          }
        )
      );
    in
    {
      path = [ config.nix.package ];
      environment = environment // {
        # Wrapped in mkOrder: the module system then merges the environment without evaluating
        # this value (it evaluates a plain one, and the digest reads the merged environment: a
        # cycle). The order of a single definition changes nothing.
        HAIL_UNIT_CONFIG = lib.mkOrder 1000 digest;
      };
      serviceConfig = {
        ExecStart = execStart;
      }
      // lib.optionalAttrs (credentials != [ ]) { LoadCredential = credentials; }
      // lib.optionalAttrs (unit.timeoutStartSec != null) {
        TimeoutStartSec = "${toString unit.timeoutStartSec}s";
      };
    };

  instanceOptions =
    { name, config, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
          example = false;
          description = ''
            Whether to run this hail instance (the systemd unit `hail@<name>`). Set it to `false` to
            keep an instance's configuration without running it.
          '';
        };

        package = lib.mkPackageOption pkgs "hail" {
          example = "hail.packages.\${pkgs.stdenv.hostPlatform.system}.default";
          extraDescription = ''
            The flake's `nixosModules.default` (the repository's `nixos/` directory) makes it hail
            built from that repository with the system's nixpkgs; `nixos/module.nix` alone expects
            `pkgs.hail` (the flake's `overlays.default`).
          '';
        };

        jobUri = mkOption {
          type = types.str;
          example = "https://hydra.example.org/job/infra/production/web";
          description = ''
            The Hydra job to deploy, `https://HYDRA/job/PROJECT/JOBSET/JOB`. hail polls its latest
            successful build (`<jobUri>/latest`) and deploys that build's `out` path. It must not
            hold credentials (`https://user:password@…`): the unit is world-readable in the Nix
            store and in `systemctl show`; put them in `netrcFile`.
          '';
        };

        profile = mkOption {
          type = types.str;
          default =
            if config.system then "/nix/var/nix/profiles/system" else "/nix/var/nix/profiles/hail/${name}";
          defaultText = literalExpression ''
            if system then "/nix/var/nix/profiles/system" else "/nix/var/nix/profiles/hail/''${name}"
          '';
          example = "/nix/var/nix/profiles/web";
          description = ''
            The Nix profile hail switches to each new build (and whose `bin/activate` it runs).
            A bare name means `/nix/var/nix/profiles/<name>`; an absolute path is used as is.
            Two instances cannot share a profile.
          '';
        };

        pollPeriod = mkOption {
          type = types.nullOr (types.either types.ints.positive periodType);
          default = null;
          example = "30s";
          description = ''
            Time between two polls of Hydra: a number of minutes, or a string with a unit (`30s`,
            `5m`, `1h`). `null` keeps hail's default (5 minutes). `systemctl reload hail@<name>`
            polls at once whatever the period.
          '';
        };

        netrcFile = mkOption {
          type = types.nullOr (types.strMatching "/.+" // { description = "absolute path string"; });
          default = null;
          example = "/etc/hail/netrc";
          description = ''
            Absolute path of a netrc file with credentials for the Hydra host, read when the unit
            starts and handed to hail as the systemd credential `netrc` (`LoadCredential=`), so only
            the service can read it. It must be outside the Nix store: the store is world-readable,
            so write the file by other means (a secrets manager, or by hand with mode 0600).
            `null`: the template's own credential, `/etc/credstore/hail-<name>.netrc`, when it
            exists, else `/etc/netrc` when it exists.
          '';
        };

        activationTimeout = mkOption {
          type = types.nullOr durationType;
          default = null;
          example = "30m";
          description = ''
            Longest time the profile's `bin/activate` may run before it is stopped, counted as
            failed and rolled back. `null` keeps hail's default (`10m`). The unit's start timeout
            (`TimeoutStartSec`, which covers the start-up activation) follows it: one minute more.
          '';
        };

        realiseTimeout = mkOption {
          type = types.nullOr durationType;
          default = null;
          example = "2h";
          description = ''
            Longest time realising a build from the binary cache may take. `null` keeps hail's
            default (`1h`).
          '';
        };

        httpTimeout = mkOption {
          type = types.nullOr durationType;
          default = null;
          example = "30s";
          description = ''
            Longest time one request to Hydra may take. `null` keeps hail's default (`60s`).
          '';
        };

        metricsFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "/var/lib/prometheus-node-exporter-text/hail-web.prom";
          description = ''
            Write Prometheus metrics (text format) to this file after every poll and deployment,
            for node_exporter's textfile collector (`services.prometheus.exporters.node` with
            `enabledCollectors = [ "textfile" ]` and `--collector.textfile.directory` naming the
            file's directory). `null`: no metrics file.
          '';
        };

        keepGenerations = mkOption {
          type = types.nullOr types.ints.unsigned;
          default = null;
          example = 5;
          description = ''
            After a successful deployment, delete the profile's generations beyond the newest N
            (never the current one nor the one a rollback returns to); `0` keeps all. Garbage
            collection itself stays with `nix.gc`. `null` keeps hail's default (`10`).
          '';
        };

        healthCheck = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "\${pkgs.curl}/bin/curl -fsS http://127.0.0.1:8080/health";
          description = ''
            A command that must succeed after each activation, besides the profile's own
            `bin/health-check`: split into words as systemd splits `ExecStart=` (quotes honoured),
            run without a shell with `HAIL_BUILD_ID`, `HAIL_STORE_PATH`, `HAIL_PROFILE` and
            `HAIL_GENERATION` set. It is tried every `healthInterval` until `healthTimeout`; when it
            never passes, the previous generation is put back and the build is not deployed
            again. `null`: only the profile's own check, if it has one.
          '';
        };

        healthInterval = mkOption {
          type = types.nullOr durationType;
          default = null;
          example = "10s";
          description = "Time between two tries of a failing health check. `null`: hail's default (`5s`).";
        };

        healthTimeout = mkOption {
          type = types.nullOr durationType;
          default = null;
          example = "5m";
          description = ''
            How long health checks may keep failing before the deployment counts as failed and is
            rolled back. `null`: hail's default (`2m`).
          '';
        };

        confirmTimeout = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "5m";
          description = ''
            After a deployment's checks pass, hail must reach Hydra again (the request its poll
            makes) within this time, or the previous good build is put back and the build is not
            deployed again: a switch that cut the host off is undone. `"0s"` turns it off.
            `null`: hail's default (`"2m"` with `system`, else off).
          '';
        };

        onSuccess = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "\${pkgs.curl}/bin/curl -fsS -d deployed https://chat.example.org/hooks/web";
          description = ''
            A command run once a build is deployed and its checks passed: split into words as
            `healthCheck` is, run without a shell, with `HAIL_EVENT=deployed`, `HAIL_BUILD_ID`,
            `HAIL_STORE_PATH`, `HAIL_GENERATION`, `HAIL_PREVIOUS_BUILD_ID`, `HAIL_JOB_URI`,
            `HAIL_PROFILE` and `HAIL_INSTANCE` set. A hook that fails or hangs is logged and
            changes nothing. `null`: none.
          '';
        };

        onFailure = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "\${pkgs.systemd}/bin/systemctl start --no-block page-the-on-call.service";
          description = ''
            A command run after a failed deployment (after its rollback), as `onSuccess` is, with
            `HAIL_EVENT` saying how it failed (`realise-failed`, `switch-failed`,
            `activation-failed`, `health-check-failed`) and `HAIL_ERROR` why. `null`: none.
          '';
        };

        hookTimeout = mkOption {
          type = types.nullOr durationType;
          default = null;
          example = "30s";
          description = "Longest time a hook may run; its process group is killed then. `null`: hail's default (`1m`).";
        };

        minBuildAge = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "2h";
          description = ''
            Deploy a build only once Hydra finished it at least this long ago (a duration:
            `30m`, `2h`). `null`: at once.
          '';
        };

        rolloutSpread = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "6h";
          description = ''
            Spread a fleet's deployments over this window: each host waits its own fixed delay in
            it, derived from its machine id and the job, so canaries (`"0s"`) go first and the
            rest follow in waves without a coordinator. `null`: no delay.
          '';
        };

        allowDowngrade = mkOption {
          type = types.bool;
          default = false;
          example = true;
          description = ''
            Deploy a build whose Hydra id is lower than the deployed build's. By default such a
            build waits (builds were deleted, or Hydra's latest fell back to an older one).
          '';
        };

        gate = mkOption {
          type = types.nullOr (
            types.enum [
              "latest"
              "evaluation"
            ]
          );
          default = null;
          example = "evaluation";
          description = ''
            Which build to deploy: `"latest"`, the job's latest successful build, or
            `"evaluation"`, the job's build of the newest Hydra evaluation of its jobset whose
            builds all finished and succeeded (among the last `gateDepth`). `null`: hail's default
            (`"latest"`).
          '';
        };

        gateDepth = mkOption {
          type = types.nullOr (types.ints.between 1 200);
          default = null;
          example = 20;
          description = "How many of the jobset's newest evaluations `gate = \"evaluation\"` looks back at. `null`: hail's default (10).";
        };

        system = mkOption {
          type = types.bool;
          default = false;
          example = true;
          description = ''
            The job builds a whole NixOS system (`config.system.build.toplevel`): hail refuses a
            path that is not one (it needs `bin/switch-to-configuration` and `nixos-version`),
            makes it a generation of `profile` (by default `/nix/var/nix/profiles/system`) and
            runs its `switch-to-configuration` in a transient unit, as `nixos-rebuild` does. A
            failed switch or health check goes back to the previous system.
          '';
        };

        switchAction = mkOption {
          type = types.nullOr (
            types.enum [
              "switch"
              "boot"
              "test"
            ]
          );
          default = null;
          example = "boot";
          description = ''
            With `system`, what `switch-to-configuration` does: `"switch"` (boot default and
            active now), `"boot"` (boot default, active after the next reboot) or `"test"` (active
            now; the profile and the boot menu stay as they are). `null`: hail's default
            (`"switch"`).
          '';
        };

        reboot = mkOption {
          type = types.nullOr (
            types.enum [
              "never"
              "when-needed"
            ]
          );
          default = null;
          example = "when-needed";
          description = ''
            With `system`, whether hail reboots the host when the deployed system's kernel, initrd
            or kernel modules differ from the booted system's: `"never"` only reports it (status,
            metrics, journal), `"when-needed"` reboots through systemd after a successful switch
            and health check, inside `rebootWindow` when it is set. `null`: hail's default
            (`"never"`).
          '';
        };

        rebootWindow = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "02:00-04:30";
          description = ''
            With `reboot = "when-needed"`, reboot only between these local times (`HH:MM-HH:MM`;
            an end before the start goes over midnight); a reboot that waits for the window is
            done when it opens, whatever `pollPeriod` is. `null`: at any time.
          '';
        };

        extraArgs = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "--http-timeout" "2m" ];
          description = ''
            Extra command-line arguments for `hail`, appended after the ones this module sets
            through the environment.
          '';
        };

        environment = mkOption {
          type = types.attrsOf types.str;
          default = { };
          example = {
            NIX_CONFIG = "narinfo-cache-positive-ttl = 0";
            RUST_LOG = "debug";
          };
          description = ''
            Extra environment variables for hail and, through it, for `nix` and the profile's
            `bin/activate`. Variables named `HAIL_*` are set by the options above and are refused
            here. Do not put secrets here: the unit's environment is stored in the Nix store.
          '';
        };

        restartIfChanged = mkOption {
          type = types.bool;
          default = false;
          example = true;
          description = ''
            Whether `nixos-rebuild switch` restarts this instance when its unit changed. The
            default, `false`, never interrupts a deployment in progress (a switch run by a
            profile's own `bin/activate`, hail deploying a NixOS system, would otherwise restart
            the hail that runs it, and a restart cuts a download or activation short), and still
            applies the new settings: the switch reloads the instance instead (`reloadIfChanged`),
            hail finds that the settings of its unit (a digest in `HAIL_UNIT_CONFIG`) are no longer
            those it runs with, finishes what it is doing and restarts itself through systemd
            (`systemctl restart --no-block`), logging why. `true`: the switch restarts the
            instance after the activation (`stopIfChanged = false`). New instances are started
            and removed or disabled ones stopped either way.
          '';
        };
      };
    };
in
{
  options.services.hail = mkOption {
    type = types.attrsOf (types.submodule instanceOptions);
    default = { };
    example = literalExpression ''
      {
        web = {
          jobUri = "https://hydra.example.org/job/infra/production/web";
          netrcFile = "/etc/hail/netrc";
          pollPeriod = "5m";
        };
        worker.jobUri = "https://hydra.example.org/job/infra/production/worker";
      }
    '';
    description = ''
      hail instances, one per Hydra job. Each attribute `<name>` runs the systemd unit
      `hail@<name>`: it polls the job, realises its latest successful build from the binary
      cache, switches the profile to it and runs the profile's `bin/activate`
      (`systemctl status hail@<name>`, `journalctl -u hail@<name>`, `systemctl reload hail@<name>`
      polls at once).
    '';
  };

  config = lib.mkIf (enabled != { }) {
    assertions = lib.flatten (
      lib.mapAttrsToList (
        name: inst:
        let
          opt = "services.hail.${name}";
          ownProfile = (render name inst).profile;
          sharing = lib.attrNames (
            lib.filterAttrs (other: o: other != name && (render other o).profile == ownProfile) enabled
          );
          # Each problem starts with the setting's name ("name: …" is about the instance itself).
          problems = lib.filter (p: !(inst.jobUri == "" && lib.hasPrefix "jobUri" p)) (render name inst).problems;
          qualify = p: if lib.hasPrefix "name: " p then "${opt}: ${lib.removePrefix "name: " p}" else "${opt}.${p}";
        in
        [
          {
            assertion = inst.jobUri != "";
            message = "${opt}.jobUri must not be empty.";
          }
          {
            # NixOS sets a unit's PATH from its `path`; a second definition would conflict.
            assertion = !(inst.environment ? PATH);
            message = ''${opt}.environment.PATH: set systemd.services."hail@${name}".path instead (NixOS builds PATH from it).'';
          }
          {
            assertion = sharing == [ ];
            message = ''
              ${opt}.profile: ${ownProfile} is also the profile of ${
                lib.concatMapStringsSep ", " (o: "services.hail.${o}") sharing
              }; two hail instances cannot deploy to one profile (the second would refuse to start).'';
          }
        ]
        ++ map (p: {
          assertion = false;
          message = qualify p;
        }) problems
      ) enabled
    );

    # No template is installed for these instances: each is a complete unit. The template stays
    # available for instances that a manager adds at run time (drop-ins in /run, which set their
    # own ExecStart); it comes from the package that most instances run, the lowest-named one
    # on a tie.
    systemd.packages = [ hostPackage ];

    systemd.services = { hail-catalog = catalogService; } // lib.mapAttrs' (
      name: inst:
      let
        unit = unitOf name inst;
        fromTemplate = lib.mapAttrs (_: lib.mkDefault);
      in
      lib.nameValuePair "hail@${name}" (
        {
          description = lib.mkDefault template.Unit.Description;
          unitConfig = fromTemplate (
            builtins.removeAttrs template.Unit ([ "Description" ] ++ lib.attrNames unitListOptions)
          );
          serviceConfig = fromTemplate (builtins.removeAttrs template.Service instanceKeys) // unit.serviceConfig;
          wantedBy = words template.Install.WantedBy;
          # A switch must not restart hail in the middle of a deployment (see restartIfChanged):
          # by default it reloads a changed instance, and hail restarts itself once its work is
          # done. If restarting is chosen, it happens after activation rather than stopping hail
          # before it.
          inherit (inst) restartIfChanged;
          reloadIfChanged = !inst.restartIfChanged;
          stopIfChanged = false;
          inherit (unit) environment path;
        }
        // lib.mapAttrs' (key: option: lib.nameValuePair option (words template.Unit.${key})) (
          lib.intersectAttrs template.Unit unitListOptions
        )
      )
    ) enabled;
  };
}
