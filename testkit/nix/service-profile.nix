# A deployable profile whose activation installs and (re)starts a small service, the way a real
# deployment does: `hail-demo.service` (Type=notify, status "hail-demo version <version>") is linked
# into /run/systemd/system, systemd reloads and the service restarts. Built without nixpkgs
# (builder: the host's /bin/sh, so it needs `sandbox = false`); the scripts only need a systemd
# host with /bin/sh, such as the test container.
#
# `bin/activate` first holds for as long as /var/lib/hail-demo/hold exists (creating
# /var/lib/hail-demo/held, so a test knows the activation is under way), restarts the service,
# appends "activated <version> <out path>" to /var/lib/hail-demo/activations, then exits with
# `activateExit`: a failing release still changes the service first, so a rollback must visibly
# put the previous one back. `nonce` only makes the store paths unique, so parallel tests never
# share one.
#
#   nix-build service-profile.nix --argstr version 2 --argstr nonce 1234
{
  version ? "1",
  nonce,
  activateExit ? "0",
}:
builtins.derivation {
  name = "hail-demo-profile-${version}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  # Every attribute reaches the builder as an environment variable.
  inherit version nonce activateExit;
  args = [ "-c" ''
    set -e
    PATH=/usr/bin:/bin
    mkdir -p "$out/bin" "$out/lib/systemd/system"
    {
      printf '#!/bin/sh\n'
      # systemd-notify is a child of the main process: the unit says NotifyAccess=all.
      printf 'systemd-notify --ready --status="hail-demo version %s"\n' "$version"
      printf 'exec sleep infinity\n'
    } > "$out/bin/hail-demo"
    {
      printf '[Unit]\nDescription=hail demo service, version %s\n' "$version"
      printf '[Service]\nType=notify\nNotifyAccess=all\nExecStart=%s/bin/hail-demo\n' "$out"
    } > "$out/lib/systemd/system/hail-demo.service"
    {
      printf '#!/bin/sh\nset -e\n'
      printf 'hold=/var/lib/hail-demo/hold\n'
      printf 'if [ -e "$hold" ]; then touch /var/lib/hail-demo/held; fi\n'
      printf 'while [ -e "$hold" ]; do sleep 0.1; done\n'
      printf 'ln -sfn %s/lib/systemd/system/hail-demo.service /run/systemd/system/hail-demo.service\n' "$out"
      printf 'systemctl daemon-reload\n'
      printf 'systemctl restart hail-demo.service\n'
      printf 'mkdir -p /var/lib/hail-demo\n'
      printf 'echo "activated %s %s" >> /var/lib/hail-demo/activations\n' "$version" "$out"
      printf 'echo "hail-demo version %s activated"\n' "$version"
      printf 'exit %s\n' "$activateExit"
    } > "$out/bin/activate"
    chmod +x "$out/bin/hail-demo" "$out/bin/activate"
  '' ];
}
