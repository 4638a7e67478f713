# A deployable test profile, built without nixpkgs (builder: the host's /bin/sh, so it needs
# `sandbox = false`). Its closure has two paths: test-profile-<version> -> payload-<version>.
#
# `bin/activate` runs `extraActivate` (shell lines), sleeps `activateSleep` seconds, checks that
# the payload is present, appends "activated <version> <out path>" to `marker`, and exits with
# `activateExit`. A non-empty `healthCheck` becomes `bin/health-check`. `nonce` only makes the
# store paths unique, so parallel tests never share one.
#
#   nix-build test-profile.nix --argstr version 2 --argstr marker /tmp/m --argstr nonce 1234
{
  version ? "1",
  marker,
  nonce,
  activateExit ? "0",
  activateSleep ? "0",
  extraActivate ? "",
  healthCheck ? "",
}:
let
  payload = builtins.derivation {
    name = "payload-${version}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    inherit nonce;
    args = [ "-c" "echo payload-${version} > $out" ];
  };
in
builtins.derivation {
  name = "test-profile-${version}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  # Every attribute reaches the builder as an environment variable; printf '%s' copies the
  # values into the script verbatim, whatever characters they hold.
  inherit version marker nonce payload activateExit activateSleep extraActivate healthCheck;
  args = [ "-c" ''
    set -e
    PATH=/usr/bin:/bin
    mkdir -p "$out/bin"
    ln -s "$payload" "$out/payload"
    printf '%s\n' "$version" > "$out/version"
    {
      printf '#!/bin/sh\n'
      printf '%s\n' "$extraActivate"
      if [ "$activateSleep" != 0 ]; then printf 'sleep %s\n' "$activateSleep"; fi
      printf '[ -e %s ] || { echo "payload %s missing" >&2; exit 90; }\n' "$payload" "$payload"
      printf 'echo "activated %s %s" >> '"'"'%s'"'"'\n' "$version" "$out" "$marker"
      printf 'echo "test profile %s activated"\n' "$version"
      printf 'exit %s\n' "$activateExit"
    } > "$out/bin/activate"
    chmod +x "$out/bin/activate"
    if [ -n "$healthCheck" ]; then
      printf '#!/bin/sh\n%s\n' "$healthCheck" > "$out/bin/health-check"
      chmod +x "$out/bin/health-check"
    fi
  '' ];
}
