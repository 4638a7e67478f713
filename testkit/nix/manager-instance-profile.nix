# A deployable profile for the manager's system tests, built without nixpkgs (builder: the host's
# /bin/sh, so it needs `sandbox = false`). Both scripts append a line to /var/lib/hail-test/events:
#   bin/activate    "activated <instance> <version>"
#   bin/deactivate  "deactivating <instance> <version>", then "deactivated <instance> <version>";
#                   in between it waits for as long as /var/lib/hail-test/hold-deactivate-<instance>
#                   exists, so a test can interrupt a removal half-way and let it go on later.
# `nonce` only makes the store paths unique, so parallel tests never share one.
#
#   nix-build manager-instance-profile.nix --argstr instance web --argstr version 2 --argstr nonce 1234
{
  instance,
  version ? "1",
  nonce,
}:
builtins.derivation {
  name = "hail-test-${instance}-${version}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  # Every attribute reaches the builder as an environment variable.
  inherit instance version nonce;
  args = [ "-c" ''
    set -e
    PATH=/usr/bin:/bin
    mkdir -p "$out/bin"
    events=/var/lib/hail-test/events
    {
      printf '#!/bin/sh\nset -e\nmkdir -p /var/lib/hail-test\n'
      printf 'echo "activated %s %s" >> %s\n' "$instance" "$version" "$events"
    } > "$out/bin/activate"
    {
      printf '#!/bin/sh\nset -e\nmkdir -p /var/lib/hail-test\n'
      printf 'echo "deactivating %s %s" >> %s\n' "$instance" "$version" "$events"
      printf 'hold=/var/lib/hail-test/hold-deactivate-%s\n' "$instance"
      printf 'while [ -e "$hold" ]; do sleep 0.1; done\n'
      printf 'echo "deactivated %s %s" >> %s\n' "$instance" "$version" "$events"
    } > "$out/bin/deactivate"
    chmod +x "$out/bin/activate" "$out/bin/deactivate"
  '' ];
}
