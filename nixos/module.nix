# services.hail.<name>: one hail agent per Hydra job, run as the systemd unit `hail@<name>`.
#
# The unit's settings live in one place, the template `hail@.service` that the package installs
# (`systemd.packages`). Each instance only adds a drop-in with its job, profile, credentials and
# environment, so the NixOS unit and the distro-agnostic unit cannot drift apart. What an
# instance's settings mean for its unit (variables, credential, command line, start timeout, and
# what is wrong with them) is nix/instance.nix, which the manager's instance sets use too.
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

  # hail's own period syntax: a bare number is minutes; s, m, h are units.
  periodType = types.strMatching "0*[1-9][0-9]*[smh]?" // {
    description = "period string (minutes, or with a unit: 30s, 5m, 1h)";
  };
  # Timeouts need a unit (hail also accepts ms).
  durationType = types.strMatching "[0-9]+(ms|s|m|h)" // {
    description = "duration string (30s, 10m, 1h)";
  };

  # The path hail will use for a profile option: a bare name lives in /nix/var/nix/profiles.
  profilePath = p: if lib.hasPrefix "/" p then p else "/nix/var/nix/profiles/${p}";

  # One ExecStart word: a C-style quoted string, with systemd's `%` specifiers and `$` variable
  # expansion escaped, so an argument reaches hail exactly as written.
  escapeExecArg = arg: lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON arg);

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
        extraArgs
        environment
        ;
    };

  instanceOptions =
    { name, ... }:
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
            successful build (`<jobUri>/latest`) and deploys that build's `out` path.
          '';
        };

        profile = mkOption {
          type = types.str;
          default = "/nix/var/nix/profiles/hail/${name}";
          defaultText = literalExpression ''"/nix/var/nix/profiles/hail/''${name}"'';
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
            Whether `nixos-rebuild switch` restarts this instance when its configuration changed.
            The default, `false`, never interrupts a deployment in progress: a switch run by a
            profile's own `bin/activate` (hail deploying a NixOS system) would otherwise restart
            the hail that runs it, and a restart in the middle of a download or activation cuts it
            short. The switch then lists the unit under "NOT restarting"; the new settings apply
            at the next `systemctl restart hail@<name>` or boot. New instances are started by the
            switch either way.
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
          ownProfile = profilePath inst.profile;
          sharing = lib.attrNames (
            lib.filterAttrs (other: o: other != name && profilePath o.profile == ownProfile) enabled
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

    # The template unit, with its ExecStart pointing at the package.
    # Exactly one: every package holds `hail@.service`, and NixOS links the files of all of
    # them into one directory (a second would collide). Each drop-in sets its own ExecStart.
    systemd.packages = lib.take 1 (lib.mapAttrsToList (_: inst: inst.package) enabled);

    systemd.services = lib.mapAttrs' (
      name: inst:
      let
        unit = render name inst;
      in
      lib.nameValuePair "hail@${name}" {
        # A drop-in for the template's instance, not a full unit.
        overrideStrategy = "asDropin";
        wantedBy = [ "multi-user.target" ];
        # The switch must not restart hail in the middle of a deployment (see the option's text);
        # if restarting is chosen, do it after activation rather than stopping hail before it.
        inherit (inst) restartIfChanged;
        stopIfChanged = false;
        inherit (unit) environment;
        # nix-store, nix-env for realising and switching, the same Nix as the system's daemon.
        path = [ config.nix.package ];
        serviceConfig = {
          # Each instance runs its own package (the template names only one), with its extra
          # arguments; the empty entry resets the template's ExecStart.
          ExecStart = [
            ""
            (lib.concatMapStringsSep " " escapeExecArg unit.execStart)
          ];
        }
        // lib.optionalAttrs (unit.credentials != { }) {
          # Replaces the template's credential of the same name.
          LoadCredential = lib.mapAttrsToList (id: file: "${id}:${file}") unit.credentials;
        }
        // lib.optionalAttrs (unit.timeoutStartSec != null) {
          # READY=1 comes after the start-up activation, bounded by the activation timeout.
          TimeoutStartSec = "${toString unit.timeoutStartSec}s";
        };
      }
    ) enabled;
  };
}
