# A fake NixOS system (what `config.system.build.toplevel` builds), without nixpkgs (builder: the
# host's /bin/sh, so it needs `sandbox = false`): `nixos-version`, `kernel`, `initrd` and
# `kernel-modules` links to paths of their own (the same `kernel` argument, the same paths), and
# a `bin/switch-to-configuration` that keeps switch-to-configuration's contract:
#
#   - it appends one line to `log`: `<version> <action> <out> unit=<unit of its cgroup>
#     bootloader=<$NIXOS_INSTALL_BOOTLOADER> locale=<$LOCALE_ARCHIVE>`;
#   - `switch` and `test` point `currentSystem` (/run/current-system) at the system (as its
#     activation script does), `switch` and `boot` write `<out>` to `bootEntry` (the boot
#     loader's default);
#   - it runs `extraSwitch` (shell lines), then exits with `switchExit`.
#
# `version` names the system, `nonce` keeps the store paths of parallel tests apart.
{
  version ? "1",
  nonce,
  kernel ? "1",
  log ? "/var/lib/hail-nixos/switches",
  bootEntry ? "/var/lib/hail-nixos/boot-entry",
  currentSystem ? "/run/current-system",
  switchExit ? "0",
  extraSwitch ? "",
}:
let
  part = name: builtins.derivation {
    name = "${name}-${kernel}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    inherit nonce;
    args = [ "-c" "echo ${name}-${kernel} > $out" ];
  };
in
builtins.derivation {
  name = "nixos-system-fake-${version}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  kernelPath = part "kernel";
  initrdPath = part "initrd";
  modulesPath = part "kernel-modules";
  inherit version nonce log bootEntry currentSystem switchExit extraSwitch;
  args = [ "-c" ''
    set -e
    PATH=/usr/bin:/bin
    mkdir -p "$out/bin"
    ln -s "$kernelPath" "$out/kernel"
    ln -s "$initrdPath" "$out/initrd"
    ln -s "$modulesPath" "$out/kernel-modules"
    printf '#!/bin/sh\necho %s\n' "$version" > "$out/nixos-version"
    chmod +x "$out/nixos-version"
    {
      printf '#!/bin/sh\n'
      printf 'action="$1"\n'
      printf 'unit=$(sed -n "s|^0::.*/||p" /proc/self/cgroup)\n'
      printf 'mkdir -p "$(dirname %s)" "$(dirname %s)"\n' "$log" "$bootEntry"
      printf 'echo "%s $action %s unit=$unit bootloader=$NIXOS_INSTALL_BOOTLOADER locale=$LOCALE_ARCHIVE" >> %s\n' "$version" "$out" "$log"
      printf 'case "$action" in switch|test) ln -sfn %s %s;; esac\n' "$out" "$currentSystem"
      printf 'case "$action" in switch|boot) echo %s > %s;; esac\n' "$out" "$bootEntry"
      printf 'echo "switch-to-configuration %s $action"\n' "$version"
      printf '%s\n' "$extraSwitch"
      printf 'exit %s\n' "$switchExit"
    } > "$out/bin/switch-to-configuration"
    chmod +x "$out/bin/switch-to-configuration"
  '' ];
}
