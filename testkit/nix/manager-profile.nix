# The manager profile of the tests: nix/manager.nix exactly as users call it, built without
# nixpkgs: the host's /bin/sh as the builder and shell (so it needs `sandbox = false`), and a hail
# package directory (`<dir>/bin/hail`) added to the store with builtins.path.
#
#   nix-build manager-profile.nix --argstr hailPackage /tmp/pkg --argstr nonce 1234 \
#     --argstr instancesJson '{"web": {"jobUri": "http://127.0.0.1:8080/job/p/j/web"}}'
{
  hailPackage,
  instancesJson,
  # Part of the hail path's name: parallel tests each get their own copy, so one test deleting
  # its closure from the local store never pulls it from under another.
  nonce,
}:
import ../../nix/manager.nix {
  hail = builtins.path {
    path = /. + hailPackage;
    name = "hail-${nonce}";
  };
  shell = "/bin/sh";
  instances = builtins.fromJSON instancesJson;
}
