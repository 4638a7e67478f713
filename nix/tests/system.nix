# NixOS VM test of `--system`: `services.hail.os` (system = true) on `agent` deploys a whole NixOS
# system that a Hydra-compatible server on `server` names (the agent's own configuration extended
# with one change, built into the server's store only and served signed by nix-serve, so the
# agent really fetches it): switched to with its switch-to-configuration in a transient unit, no
# reboot needed (same kernel), then a build that is not a system is refused with the system
# profile untouched.
#   nix build .#checks.x86_64-linux.vm-system   (needs KVM)
{ lib, pkgs, ... }:

let
  # Not a NixOS system: hail must refuse it.
  notASystem = pkgs.writeTextDir "share/hail-test" "not a system";

  cacheSecretKey = pkgs.writeText "cache.sec" "hail-vm-test-1:rnmg4tLk+0MwjmtOWc5VOGr3FTR/G5CPzWbTBjero4NtorazIdipfoOUBMbweyqvbFZ24IW7ohbO2N1+iTclig==";
  cachePublicKey = "hail-vm-test-1:baK2syHYqX6DlATG8Hsqr2xWduCFu6IWztjdfok3JYo=";
  credentials = "hail:vm-test-password";

  # Not in the agent's closure (a specialisation would be): only the server has it.
  nextOf = nodes: nodes.agent.hailTest.next;
in
{
  name = "hail-system";

  defaults.imports = [ ../../nixos ];

  nodes.server =
    { nodes, ... }:
    let
      builds = pkgs.writeText "builds.json" (
        builtins.toJSON {
          "1" = "${nextOf nodes}";
          "2" = "${notASystem}";
        }
      );
    in
    {
      system.extraDependencies = [
        (nextOf nodes)
        notASystem
      ];
      services.nix-serve = {
        enable = true;
        openFirewall = true;
        secretKeyFile = "${cacheSecretKey}";
      };
      systemd.services.fake-hydra = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig = {
          StateDirectory = "fake-hydra";
          ExecStartPre = "${pkgs.runtimeShell} -c 'echo 1 > /var/lib/fake-hydra/current'";
          ExecStart = "${pkgs.python3.interpreter} ${./fake-hydra.py} 3000 ${builds} /var/lib/fake-hydra/current ${credentials}";
        };
      };
      networking.firewall.allowedTCPPorts = [ 3000 ];
    };

  nodes.agent =
    { extendModules, ... }:
    {
      options.hailTest.next = lib.mkOption {
        description = "The system Hydra names: this one with another /etc/hail-release.";
        type = lib.types.package;
      };
      config.hailTest.next =
        (extendModules {
          modules = [ { environment.etc."hail-release".text = lib.mkForce "next"; } ];
        }).config.system.build.toplevel;
      config.nix.settings = {
        substituters = lib.mkForce [ "http://server:5000" ];
        trusted-public-keys = lib.mkForce [ cachePublicKey ];
      };
      config.environment.etc."hail-release".text = "booted";
      config.systemd.services."hail@os".unitConfig.ConditionPathExists = "/etc/hail/netrc";
      config.services.hail.os = {
        jobUri = "http://server:3000/job/demo/main/os";
        netrcFile = "/etc/hail/netrc";
        pollPeriod = "10s";
        system = true;
      };
    };

  testScript =
    { nodes, ... }:
    ''
      next = "${nextOf nodes}"
      start_all()
      server.wait_for_unit("nix-serve.service")
      server.wait_for_unit("fake-hydra.service")
      server.wait_for_open_port(5000)
      server.wait_for_open_port(3000)
      agent.wait_for_unit("multi-user.target")
      agent.succeed(
          "umask 077 && mkdir -p /etc/hail && "
          "echo 'machine server login hail password vm-test-password' > /etc/hail/netrc"
      )
      agent.succeed("systemctl start hail@os.service")
      agent.wait_for_unit("hail@os.service")

      with subtest("hail fetches the system Hydra names and switches the host to it"):
          agent.fail(f"nix-store --check-validity {next}")
          agent.succeed("systemctl reload hail@os")
          agent.wait_until_succeeds(f"test \"$(readlink -f /run/current-system)\" = {next}", timeout=300)
          agent.wait_until_succeeds(f"test \"$(readlink -f /nix/var/nix/profiles/system)\" = {next}")
          agent.succeed("grep -q next /etc/hail-release")
          agent.wait_until_succeeds("systemctl show -P StatusText hail@os | grep -q 'deployed build 1'")
          agent.succeed("journalctl -u hail@os --grep 'switch-to-configuration:'")
          status = agent.succeed("systemctl show -P StatusText hail@os")
          assert "reboot needed" not in status, status

      with subtest("a build that is not a NixOS system is refused, the profile untouched"):
          server.succeed("echo 2 > /var/lib/fake-hydra/current")
          agent.succeed("systemctl reload hail@os")
          agent.wait_until_succeeds("systemctl show -P StatusText hail@os | grep -q 'is not a NixOS system'", timeout=120)
          agent.succeed(f"test \"$(readlink -f /nix/var/nix/profiles/system)\" = {next}")
          agent.succeed(f"test \"$(readlink -f /run/current-system)\" = {next}")
    '';
}
