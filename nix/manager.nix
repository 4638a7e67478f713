# A manager profile: the profile a "manager" hail instance deploys to run a set of hail instances.
# Build it in a Hydra jobset; the manager (itself an ordinary hail instance) polls that job, and
# each new build's bin/activate converges the host's hail@ instances to the set:
#   $out/instances.json  the set, as data (format version 1, read by `hail apply-instances`)
#   $out/bin/activate    runs `hail apply-instances $out/instances.json`
# No nixpkgs: the builder's shell and the hail package are arguments. The flake exposes this
# function as `lib.mkManagerProfile`; without flakes: `import ./nix/manager.nix { … }`.
#
#   mkManagerProfile {
#     hail = hail.packages.x86_64-linux.default;   # runs the instances and applies the set
#     shell = "${pkgs.bash}/bin/sh";                # builder, and bin/activate's interpreter
#     coreutils = pkgs.coreutils;                   # mkdir, cp, chmod for the builder
#     instances = {
#       manager = { jobUri = "https://hydra.example.org/job/infra/hosts/manager-web1"; pollPeriod = "1m"; };
#       web = { jobUri = "https://hydra.example.org/job/infra/production/web"; netrcFile = "/etc/hail/netrc"; };
#       worker = "https://hydra.example.org/job/infra/production/worker";   # just the job
#     };
#   }
#
# Each instance takes every setting of services.hail.<name> (nix/instance.nix's arguments), checked
# as the NixOS module checks them; `package` defaults to `hail`, so deploying a new hail through
# the manager updates every instance. An instance with `enable = false` is removed like a deleted
# one, and its other settings are not checked. `restartIfChanged` has no effect here: applying a
# set restarts each changed instance.
{
  hail,
  shell,
  instances,
  # null: mkdir, cp and chmod from the build host's /usr/bin:/bin (a build without sandbox).
  coreutils ? null,
  # Packages (or directories) whose bin/ go first on every instance's PATH, for `nix-store`,
  # `nix-env` and what activations call: systemd's own default PATH has no Nix on NixOS, e.g.
  # `path = [ pkgs.nix pkgs.systemd ];`. An instance's `environment.PATH` wins over it.
  path ? [ ],
  # The build platform; by default the hail package's (builtins.currentSystem does not exist in
  # pure evaluation: flakes, Hydra's flake jobsets).
  system ?
    if builtins.isAttrs hail && hail ? system then
      hail.system
    else if builtins ? currentSystem then
      builtins.currentSystem
    else
      throw "hail manager profile: pass `system` (for example \"x86_64-linux\"): hail is not a derivation that names it.",
  name ? "hail-manager-profile",
}:
let
  instanceFunction = import ./instance.nix;
  # The settings instance.nix takes (`name` is the attribute's name).
  known = builtins.removeAttrs (builtins.functionArgs instanceFunction) [ "name" ];

  settingsOf =
    instanceName: value:
    let
      unknown = builtins.filter (n: !(known ? ${n})) (builtins.attrNames value);
    in
    if builtins.isString value then
      { jobUri = value; }
    else if !(builtins.isAttrs value) then
      throw "hail manager profile: instances.${instanceName} must be a job URI or a set of instance settings."
    else if unknown != [ ] then
      throw "hail manager profile: instances.${instanceName}: unknown setting ${builtins.concatStringsSep ", " unknown} (known: ${builtins.concatStringsSep ", " (builtins.attrNames known)})."
    else if !(value ? jobUri) then
      throw "hail manager profile: instances.${instanceName}.jobUri is missing."
    else
      value;

  # Every instance's PATH: the path's packages, then the default profile where Nix's own installer
  # puts `nix-env` (a managed instance reads no /etc/hail/<name>.env, where a hand-made install
  # would set PATH), then systemd's default PATH, which this replaces.
  defaultEnvironment = {
    PATH = builtins.concatStringsSep ":" (
      map (p: "${p}/bin") path
      ++ [
        "/nix/var/nix/profiles/default/bin"
        "/usr/local/sbin"
        "/usr/local/bin"
        "/usr/sbin"
        "/usr/bin"
        "/sbin"
        "/bin"
      ]
    );
  };

  all = builtins.mapAttrs (
    instanceName: value:
    let
      settings = settingsOf instanceName value;
    in
    instanceFunction (
      { package = hail; }
      // settings
      // {
        name = instanceName;
        environment = defaultEnvironment // (settings.environment or { });
      }
    )
  ) instances;

  enabled = builtins.removeAttrs all (builtins.filter (n: !all.${n}.enable) (builtins.attrNames all));

  # As the NixOS module: only the instances that run are checked.
  problems = builtins.concatLists (
    builtins.attrValues (builtins.mapAttrs (n: i: map (p: "instances.${n}.${p}") i.problems) enabled)
  );

  # Two instances cannot deploy to one profile (the second would refuse to start).
  profiles = builtins.attrValues (builtins.mapAttrs (n: i: { inherit n; inherit (i) profile; }) enabled);
  shared = builtins.filter (a: builtins.length (builtins.filter (b: b.profile == a.profile) profiles) > 1) profiles;
  sharedProblems = map (a: "instances.${a.n}.profile: ${a.profile} is also another instance's profile.") shared;

  withoutNulls = s: builtins.removeAttrs s (builtins.filter (k: s.${k} == null) (builtins.attrNames s));

  set = {
    version = 1;
    instances = builtins.mapAttrs (
      _: i:
      withoutNulls {
        inherit (i) environment credentials execStart timeoutStartSec;
      }
    ) enabled;
  };

  allProblems = problems ++ sharedProblems;
in
if allProblems != [ ] then
  throw "hail manager profile:\n  ${builtins.concatStringsSep "\n  " allProblems}"
else
  builtins.derivation {
    inherit name system shell;
    builder = shell;
    PATH = if coreutils == null then "/usr/bin:/bin" else "${coreutils}/bin";
    hailExe = "${hail}/bin/hail";
    instancesJson = builtins.toJSON set;
    passAsFile = [ "instancesJson" ];
    args = [
      "-c"
      ''
        set -e
        mkdir -p "$out/bin"
        cp "$instancesJsonPath" "$out/instances.json"
        printf '#!%s\nexec %s apply-instances %s\n' "$shell" "$hailExe" "$out/instances.json" > "$out/bin/activate"
        chmod 0555 "$out/bin/activate"
      ''
    ];
  }
