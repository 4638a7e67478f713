# One hail instance's settings -> what its unit hail@<name> needs: environment variables, systemd
# credentials, the command line and the start timeout. The manager (nix/manager.nix) builds its
# instance set with it; the settings are those of the NixOS module's services.hail.<name>.
# No nixpkgs: builtins only.
#
#   import ./instance.nix { name = "web"; jobUri = "https://hydra.example.org/job/p/j/web"; }
#   => { enable = true; problems = [ ]; profile = "/nix/var/nix/profiles/hail/web";
#        environment = { HAIL_JOB_URI = "…"; HAIL_PROFILE = "/nix/var/nix/profiles/hail/web"; };
#        credentials = { }; execStart = null; timeoutStartSec = null; }
#
# `problems` lists what is wrong with the settings (empty when they are fine), each message
# starting with the setting's name; the caller turns them into errors or assertions.
{
  name,
  # The Hydra job, https://HYDRA/job/PROJECT/JOBSET/JOB.
  jobUri,
  enable ? true,
  # The hail package whose bin/hail runs the instance; null keeps the unit's own ExecStart.
  package ? null,
  # The job builds whole NixOS systems (hail --system).
  system ? false,
  # A bare name means /nix/var/nix/profiles/<name>; an absolute path is used as is. null: the
  # system profile for a system, else /nix/var/nix/profiles/hail/<name>.
  profile ? null,
  # Minutes (a number), or a string with a unit: "30s", "5m", "1h". null: hail's default.
  pollPeriod ? null,
  # Absolute path of a netrc file outside the store, handed over as the systemd credential
  # "netrc" (read by hail from $CREDENTIALS_DIRECTORY/netrc).
  netrcFile ? null,
  # Durations with a unit ("30s", "10m", "1h"); null: hail's defaults (10m, 1h, 60s).
  activationTimeout ? null,
  realiseTimeout ? null,
  httpTimeout ? null,
  # Where to write Prometheus metrics (an absolute path), e.g. into node_exporter's textfile
  # collector directory; null: none.
  metricsFile ? null,
  # Generations kept after a successful deployment (0 keeps all); null: hail's default (10).
  keepGenerations ? null,
  # A command that must pass after each activation (besides the profile's bin/health-check),
  # and how often / how long it is tried ("5s", "2m"); null: none / hail's defaults.
  healthCheck ? null,
  healthInterval ? null,
  healthTimeout ? null,
  # Staged rollout: deploy a build only once it is this old, and after this host's own delay in
  # a window of this length ("30m", "2h"); null or "0s": no wait.
  minBuildAge ? null,
  rolloutSpread ? null,
  # Deploy a build with a lower Hydra id than the deployed one.
  allowDowngrade ? false,
  # "latest" (the job's latest successful build) or "evaluation" (the job's build of the newest of
  # the jobset's last gateDepth evaluations whose builds all succeeded); null: hail's default.
  gate ? null,
  gateDepth ? null,
  # With system: "switch", "boot" or "test"; "never" or "when-needed"; "HH:MM-HH:MM" (local
  # time); null: hail's defaults.
  switchAction ? null,
  reboot ? null,
  rebootWindow ? null,
  # How long a deployment has to reach Hydra again ("2m"; "0s": off); null: hail's default.
  confirmTimeout ? null,
  # Commands run after each deployment's outcome (hail --on-success, --on-failure), and their
  # time bound ("1m"); null: none / hail's default.
  onSuccess ? null,
  onFailure ? null,
  hookTimeout ? null,
  # Extra hail arguments (needs package).
  extraArgs ? [ ],
  # Extra environment (NIX_CONFIG, RUST_LOG, PATH, …); HAIL_* come from the settings above.
  environment ? { },
  # Whether a NixOS switch restarts the instance (services.hail.<name>.restartIfChanged); only
  # checked here: the module acts on it, and the manager restarts a changed instance itself.
  restartIfChanged ? false,
}:
let
  profilePath =
    if profile != null then
      profile
    else if system then
      "/nix/var/nix/profiles/system"
    else
      "/nix/var/nix/profiles/hail/${name}";
  # The profile as hail resolves it, for finding two instances on one profile: a bare name lives
  # in /nix/var/nix/profiles; empty and `.` components are dropped (`/a/./b/` is `/a/b`).
  profileResolved =
    let
      absolute = if hasPrefix "/" profilePath then profilePath else "/nix/var/nix/profiles/${profilePath}";
      parts = builtins.filter (c: builtins.isString c && c != "" && c != ".") (builtins.split "/" absolute);
    in
    "/" + builtins.concatStringsSep "/" parts;
  isBool = builtins.isBool;
  storePrefix = "${builtins.storeDir}/";
  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
  matches = re: s: builtins.isString s && builtins.match re s != null;
  toInt = s: builtins.fromJSON (builtins.head (builtins.match "0*([0-9]+)" s));

  # Zero is no time bound: refused.
  durationRe = "0*[1-9][0-9]*(ms|s|m|h)";
  # A wait may be zero.
  waitRe = "[0-9]+(ms|s|m|h)";
  # An option that is unset, or a duration `re` accepts; `expected` says which in the message.
  durationCheck = option: value: re: expected: {
    ok = value == null || matches re value;
    message = "${option}: expected ${expected}.";
  };
  # No control character (a newline would start a new line of the unit file).
  plainRe = "[^[:cntrl:]]*";
  # Whole seconds in a duration (rounded up).
  durationSeconds =
    d:
    let
      parts = builtins.match "([0-9]+)(ms|s|m|h)" d;
      n = toInt (builtins.head parts);
      unit = builtins.elemAt parts 1;
    in
    if unit == "ms" then (n + 999) / 1000 else n * { s = 1; m = 60; h = 3600; }.${unit};

  netrcPath = if netrcFile == null then null else toString netrcFile;
  hailVars = builtins.filter (hasPrefix "HAIL_") (builtins.attrNames environment);
  badNames = builtins.filter (k: !(matches "[A-Za-z_][A-Za-z0-9_]*" k)) (builtins.attrNames environment);
  nonStrings = builtins.filter (k: !builtins.isString environment.${k}) (builtins.attrNames environment);

  checks = [
    {
      ok = matches "[A-Za-z0-9][A-Za-z0-9_.-]{0,199}" name;
      message = ''name: "${name}" cannot name a hail instance: use letters, digits, '_', '.' and '-' (not first), at most 200 characters.'';
    }
    {
      ok = matches "https?://[^[:space:]]+" jobUri;
      message = ''jobUri = "${toString jobUri}": expected an http:// or https:// Hydra job URL.'';
    }
    {
      # Credentials in the URL would be world-readable: in the store and in `systemctl show`.
      ok = !(matches "[A-Za-z]+://[^/?#]*@.*" jobUri);
      message = "jobUri: must not hold credentials (user:password@): the unit is world-readable (the Nix store, systemctl show); put them in a netrc file (netrcFile).";
    }
    {
      ok = matches "(/.+|[A-Za-z0-9_][A-Za-z0-9._-]*)" profilePath && matches plainRe profilePath;
      message = ''profile = "${toString profilePath}": expected a profile name or an absolute path.'';
    }
    {
      ok = pollPeriod == null || (builtins.isInt pollPeriod && pollPeriod > 0) || matches "0*[1-9][0-9]*[smh]?" pollPeriod;
      message = "pollPeriod: expected a number of minutes or a period such as \"30s\", \"5m\", \"1h\".";
    }
    {
      ok = netrcPath == null || hasPrefix "/" netrcPath;
      message = ''netrcFile = "${toString netrcPath}": expected an absolute path.'';
    }
    {
      ok = netrcPath == null || matches plainRe netrcPath;
      message = "netrcFile: contains a newline or another control character, which cannot be written into a unit file.";
    }
    {
      # systemd ignores a credential whose source path is not normalized.
      ok = netrcPath == null || !(matches "(.*/)?\\.{1,2}(/.*)?|.*//.*|.+/" netrcPath);
      message = ''netrcFile = "${toString netrcPath}": expected a normalized path (no `.`, `..` or empty components, no trailing `/`).'';
    }
    {
      ok = netrcPath == null || !(hasPrefix storePrefix netrcPath);
      message = ''netrcFile = "${toString netrcPath}" is in the Nix store, which every user can read: keep the netrc file outside the store (for example /etc/hail/netrc, mode 0600) and give its path as a string.'';
    }
    (durationCheck "activationTimeout" activationTimeout durationRe ''a non-zero duration such as "30s", "10m", "1h"'')
    (durationCheck "realiseTimeout" realiseTimeout durationRe ''a non-zero duration such as "30s", "10m", "1h"'')
    (durationCheck "httpTimeout" httpTimeout durationRe ''a non-zero duration such as "30s", "10m", "1h"'')
    {
      ok = metricsFile == null || (hasPrefix "/" (toString metricsFile) && matches plainRe (toString metricsFile));
      message = ''metricsFile = "${toString metricsFile}": expected an absolute path.'';
    }
    {
      ok = keepGenerations == null || (builtins.isInt keepGenerations && keepGenerations >= 0);
      message = "keepGenerations: expected a number of generations (0 keeps all).";
    }
    {
      ok = healthCheck == null || (matches plainRe healthCheck && healthCheck != "");
      message = "healthCheck: expected a command line on one line.";
    }
    {
      ok = builtins.all (c: c == null || (matches plainRe c && c != "")) [ onSuccess onFailure ];
      message = "onSuccess and onFailure: expected a command line on one line.";
    }
    (durationCheck "hookTimeout" hookTimeout durationRe ''a non-zero duration such as "1m"'')
    (durationCheck "confirmTimeout" confirmTimeout waitRe ''a duration such as "2m", or "0s" (off)'')
    (durationCheck "healthInterval" healthInterval durationRe ''a non-zero duration such as "5s"'')
    (durationCheck "healthTimeout" healthTimeout durationRe ''a non-zero duration such as "2m"'')
    (durationCheck "minBuildAge" minBuildAge waitRe ''a duration such as "30m" or "0s"'')
    (durationCheck "rolloutSpread" rolloutSpread waitRe ''a duration such as "2h" or "0s"'')
    {
      ok = gate == null || builtins.elem gate [ "latest" "evaluation" ];
      message = "gate: expected \"latest\" or \"evaluation\".";
    }
    {
      ok = switchAction == null || builtins.elem switchAction [ "switch" "boot" "test" ];
      message = "switchAction: expected \"switch\", \"boot\" or \"test\".";
    }
    {
      ok = reboot == null || builtins.elem reboot [ "never" "when-needed" ];
      message = "reboot: expected \"never\" or \"when-needed\".";
    }
    {
      ok = rebootWindow == null || matches "([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]" rebootWindow;
      message = "rebootWindow: expected local times HH:MM-HH:MM, such as \"02:00-04:30\".";
    }
    {
      ok = system || (switchAction == null && reboot == null && rebootWindow == null);
      message = "switchAction, reboot and rebootWindow need system = true.";
    }
    {
      ok = gateDepth == null || (builtins.isInt gateDepth && gateDepth >= 1 && gateDepth <= 200);
      message = "gateDepth: expected a number of evaluations from 1 to 200.";
    }
    {
      ok = hailVars == [ ];
      message = "environment: ${builtins.concatStringsSep ", " hailVars} are set by the instance's own settings; use those instead.";
    }
    {
      ok = badNames == [ ];
      message = "environment: ${builtins.concatStringsSep ", " (map builtins.toJSON badNames)} cannot name environment variables (letters, digits and '_', not a digit first).";
    }
    {
      ok = nonStrings == [ ];
      message = "environment: ${builtins.concatStringsSep ", " nonStrings} must be strings.";
    }
    {
      ok = builtins.isList extraArgs && builtins.all builtins.isString extraArgs;
      message = "extraArgs: expected a list of strings.";
    }
    {
      ok = builtins.all isBool [ enable allowDowngrade system restartIfChanged ];
      message = "enable, allowDowngrade, system and restartIfChanged: expected true or false.";
    }
    {
      ok = builtins.isString jobUri && builtins.isAttrs environment;
      message = "jobUri: expected a string; environment: expected an attribute set of strings.";
    }
    {
      ok = extraArgs == [ ] || package != null;
      message = "extraArgs needs package (the command they are added to).";
    }
  ];

  # Only set what was given: hail's own defaults apply otherwise.
  setVars = builtins.removeAttrs vars (builtins.filter (k: vars.${k} == null) (builtins.attrNames vars));
  vars = {
    HAIL_JOB_URI = jobUri;
    HAIL_PROFILE = profilePath;
    HAIL_SYSTEM = if system then "true" else null;
    HAIL_SWITCH_ACTION = switchAction;
    HAIL_REBOOT = reboot;
    HAIL_REBOOT_WINDOW = rebootWindow;
    HAIL_POLL_PERIOD = if pollPeriod == null then null else toString pollPeriod;
    HAIL_ACTIVATION_TIMEOUT = activationTimeout;
    HAIL_REALISE_TIMEOUT = realiseTimeout;
    HAIL_HTTP_TIMEOUT = httpTimeout;
    HAIL_METRICS_FILE = if metricsFile == null then null else toString metricsFile;
    HAIL_KEEP_GENERATIONS = if keepGenerations == null then null else toString keepGenerations;
    HAIL_HEALTH_CHECK = healthCheck;
    HAIL_HEALTH_INTERVAL = healthInterval;
    HAIL_HEALTH_TIMEOUT = healthTimeout;
    HAIL_CONFIRM_TIMEOUT = confirmTimeout;
    HAIL_ON_SUCCESS = onSuccess;
    HAIL_ON_FAILURE = onFailure;
    HAIL_HOOK_TIMEOUT = hookTimeout;
    HAIL_MIN_BUILD_AGE = minBuildAge;
    HAIL_ROLLOUT_SPREAD = rolloutSpread;
    HAIL_ALLOW_DOWNGRADE = if allowDowngrade then "true" else null;
    HAIL_GATE = gate;
    HAIL_GATE_DEPTH = if gateDepth == null then null else toString gateDepth;
  };
in
{
  inherit enable;
  # The profile's full path, to compare instances' profiles.
  profile = profileResolved;
  problems = map (c: c.message) (builtins.filter (c: !c.ok) checks);
  # hail runs as root: Nix's local store, whatever this Nix's default (Lix 2.94 and later would go
  # through the daemon's socket when it exists, where `--option narinfo-cache-negative-ttl 0`
  # only applies to a trusted user and a stale socket fails every deployment). The environment
  # can say otherwise.
  environment = { NIX_REMOTE = "local"; } // environment // setVars;
  credentials = if netrcPath == null then { } else { netrc = netrcPath; };
  execStart = if package == null then null else [ "${package}/bin/hail" ] ++ extraArgs;
  # READY=1 comes after the start-up activation, which hail bounds by the activation timeout.
  timeoutStartSec =
    if activationTimeout == null || !(matches durationRe activationTimeout) then
      null
    else
      durationSeconds activationTimeout + 60;
}
