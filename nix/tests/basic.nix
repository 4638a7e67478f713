# NixOS VM test: `services.hail.svc` on `agent` deploys the builds that a Hydra-compatible server
# on `server` names, realising them from the signed binary cache (nix-serve) on `server`; a switch
# to a specialisation without the instance `extra` stops it and leaves `svc` running.
#   nix build .#checks.x86_64-linux.vm-basic   (or: nix flake check)
{ lib, pkgs, ... }:

let
  # A deployable profile: its activation only prints, and hail forwards that to its journal.
  release =
    n:
    pkgs.writeTextFile {
      name = "hail-test-release-${toString n}";
      destination = "/bin/activate";
      executable = true;
      text = ''
        #!${pkgs.runtimeShell}
        echo "hail-test: activated release ${toString n}"
      '';
    };
  release1 = release 1;
  release2 = release 2;

  builds = pkgs.writeText "builds.json" (
    builtins.toJSON {
      "1" = "${release1}";
      "2" = "${release2}";
    }
  );

  # A key pair for this test only; it signs nothing else.
  cacheSecretKey = pkgs.writeText "cache.sec" "hail-vm-test-1:rnmg4tLk+0MwjmtOWc5VOGr3FTR/G5CPzWbTBjero4NtorazIdipfoOUBMbweyqvbFZ24IW7ohbO2N1+iTclig==";
  cachePublicKey = "hail-vm-test-1:baK2syHYqX6DlATG8Hsqr2xWduCFu6IWztjdfok3JYo=";

  netrcLogin = "hail";
  netrcPassword = "vm-test-password";

  svc = {
    jobUri = "http://server:3000/job/demo/main/svc";
    netrcFile = "/etc/hail/netrc";
    pollPeriod = "10s";
  };
  # Kept in the configuration but not run: no unit may start for it.
  off = {
    enable = false;
    jobUri = "http://server:3000/job/demo/main/off";
  };
in
{
  name = "hail-basic";

  # Every node gets the module, with hail's package as the default.
  defaults.imports = [ ../../nixos ];

  nodes.server = {
    # The releases are valid in the server's store, so nix-serve can serve them.
    system.extraDependencies = [
      release1
      release2
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
        ExecStartPre = "${pkgs.runtimeShell} -c 'test -e /var/lib/fake-hydra/current || echo 1 > /var/lib/fake-hydra/current'";
        ExecStart = "${pkgs.python3.interpreter} ${./fake-hydra.py} 3000 ${builds} /var/lib/fake-hydra/current ${netrcLogin}:${netrcPassword}";
      };
    };
    networking.firewall.allowedTCPPorts = [ 3000 ];
  };

  nodes.agent = {
    nix.settings = {
      substituters = lib.mkForce [ "http://server:5000" ];
      trusted-public-keys = lib.mkForce [ cachePublicKey ];
    };

    # The netrc is written by the test script, outside the store, as the module tells users to;
    # hail@svc starts once it is there.
    systemd.services."hail@svc".unitConfig.ConditionPathExists = "/etc/hail/netrc";

    services.hail = {
      inherit svc off;
      extra = {
        jobUri = "http://server:3000/job/demo/main/extra";
        pollPeriod = "10s";
      };
    };

    # The same system without the instance `extra`.
    specialisation.removed.configuration.services.hail = lib.mkForce { inherit svc off; };
  };

  testScript = ''
    import json

    profile = "/nix/var/nix/profiles/hail/svc"

    def journal_entries(*matches):
        out = agent.succeed("journalctl -u hail@svc -o json " + " ".join(matches))
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    start_all()
    server.wait_for_unit("nix-serve.service")
    server.wait_for_unit("fake-hydra.service")
    server.wait_for_open_port(5000)
    server.wait_for_open_port(3000)
    agent.wait_for_unit("multi-user.target")
    agent.succeed(
        "umask 077 && mkdir -p /etc/hail && "
        "echo 'machine server login ${netrcLogin} password ${netrcPassword}' > /etc/hail/netrc"
    )
    agent.succeed("systemctl start hail@svc.service")
    # Ready: configuration checked, profile lock held (a poll failing while the server booted is
    # retried, not fatal).
    agent.wait_for_unit("hail@svc.service")
    agent.wait_for_unit("hail@extra.service")

    with subtest("the instance is a complete unit of its own"):
        unit = agent.succeed("systemctl cat hail@svc.service")
        assert "/etc/systemd/system/hail@svc.service" in unit, unit
        assert ".service.d/" not in unit, unit
        assert "LoadCredential=netrc:/etc/hail/netrc" in unit, unit
        assert "EnvironmentFile" not in unit, unit
        assert "vm-test-password" not in agent.succeed("systemctl show -P Environment hail@svc")
        agent.fail("systemctl is-active hail@off.service")

    with subtest("hail@svc deploys build 1 from the cache"):
        # Poll now rather than wait for the back-off after early polls while the server booted.
        agent.succeed("systemctl reload hail@svc")
        agent.wait_until_succeeds(f"test \"$(readlink -f {profile})\" = ${release1}", timeout=120)
        agent.wait_until_succeeds("journalctl -u hail@svc --grep 'hail-test: activated release 1'")
        agent.wait_until_succeeds("journalctl -u hail@svc -o json HAIL_EVENT=deployed HAIL_BUILD_ID=1 | grep -q .")
        agent.succeed("systemctl is-active hail@svc")
        status = agent.succeed("systemctl show -P StatusText hail@svc")
        assert "deployed build 1" in status, status

    with subtest("journalctl -x explains the entry with hail's catalog"):
        agent.wait_for_unit("hail-catalog.service")
        listed = agent.succeed("journalctl --list-catalog")
        assert "35afcec8bcfb4db0ab3acb30a8cead66 hail: Build" in listed, listed
        explained = agent.succeed("journalctl -x --no-pager -u hail@svc HAIL_EVENT=deployed HAIL_BUILD_ID=1")
        assert "Subject: Build 1 deployed" in explained, explained

    with subtest("the journal entries carry hail's fields"):
        started = [e for e in journal_entries("HAIL_EVENT=started") if "HAIL_JOB" in e][-1]
        assert started["HAIL_JOB"] == "http://server:3000/job/demo/main/svc", started
        assert started["HAIL_PROFILE"] == profile, started
        deployed = journal_entries("HAIL_EVENT=deployed", "HAIL_BUILD_ID=1")[-1]
        assert deployed["HAIL_STORE_PATH"] == "${release1}", deployed
        assert deployed["MESSAGE_ID"] == "35afcec8bcfb4db0ab3acb30a8cead66", deployed
        assert "HAIL_GENERATION" in deployed, deployed

    with subtest("a new build is deployed after systemctl reload"):
        server.succeed("echo 2 > /var/lib/fake-hydra/current")
        agent.succeed("systemctl reload hail@svc")
        agent.wait_until_succeeds(f"test \"$(readlink -f {profile})\" = ${release2}", timeout=120)
        agent.wait_until_succeeds("journalctl -u hail@svc --grep 'hail-test: activated release 2'")
        agent.wait_until_succeeds("journalctl -u hail@svc -o json HAIL_EVENT=deployed HAIL_BUILD_ID=2 | grep -q .")
        agent.succeed("systemctl is-active hail@svc")

    with subtest("a switch that removes an instance stops it and leaves the others running"):
        svc_invocation = agent.succeed("systemctl show -P InvocationID hail@svc")
        agent.succeed("/run/current-system/specialisation/removed/bin/switch-to-configuration test")
        agent.fail("systemctl is-active hail@extra.service")
        agent.fail("systemctl is-failed hail@extra.service")
        agent.succeed("systemctl is-active hail@svc.service")
        assert agent.succeed("systemctl show -P InvocationID hail@svc") == svc_invocation
        # And back: the instance is started again, svc is left alone.
        agent.succeed("/run/booted-system/bin/switch-to-configuration test")
        agent.wait_for_unit("hail@extra.service")
        assert agent.succeed("systemctl show -P InvocationID hail@svc") == svc_invocation
  '';
}
