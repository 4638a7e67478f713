# hail, built from this repository with the versions pinned in Cargo.lock, its systemd
# template unit `hail@.service` pointing at the built binary, its journal message catalog, its
# man page and its shell completions, and in share/hail/monitoring the Prometheus alert rules
# (with their promtool tests) and the Grafana dashboard.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
}:

let
  fs = lib.fileset;
  cargoToml = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "hail";
  inherit (cargoToml.package) version;

  # Only what the build reads, so editing docs, Nix files or tests does not rebuild hail.
  # Every workspace member must be present for Cargo to load the workspace.
  src = fs.toSource {
    root = ../.;
    fileset = fs.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../build.rs
      ../src
      ../testkit
      # Declared benchmarks and examples must exist for the manifest to load.
      (fs.maybeMissing ../benches)
      (fs.maybeMissing ../examples)
      (../systemd + "/hail@.service")
      ../systemd/hail.catalog
      ../monitoring/alerts.yml
      ../monitoring/alerts.test.yml
      ../monitoring/dashboard.json
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ installShellFiles ];

  # The agent only; the workspace's test kit is not installed.
  cargoBuildFlags = [
    "-p"
    "hail"
  ];
  cargoTestFlags = [
    "-p"
    "hail"
  ];
  # The integration tests (tests/, left out of src) need a real Nix store and systemd; they run
  # in CI. The unit tests run in the flake's `unit` check rather than in every package build.
  doCheck = false;

  # The distro-agnostic template names /usr/local/bin/hail; point it at this package.
  # --replace-fail: the build breaks if the template stops naming that path.
  postInstall = ''
    install -Dm644 systemd/hail@.service $out/lib/systemd/system/hail@.service
    substituteInPlace $out/lib/systemd/system/hail@.service \
      --replace-fail /usr/local/bin/hail $out/bin/hail
    install -Dm644 systemd/hail.catalog $out/lib/systemd/catalog/hail.catalog
    # For services.prometheus.ruleFiles and Grafana's dashboard provisioning.
    install -Dm644 -t $out/share/hail/monitoring \
      monitoring/alerts.yml monitoring/alerts.test.yml monitoring/dashboard.json
  ''
  # The man page and completions are printed by the built binary, which a cross build cannot run.
  + lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    $out/bin/hail generate man > hail.1
    installManPage hail.1
    installShellCompletion --cmd hail \
      --bash <($out/bin/hail generate bash) \
      --zsh <($out/bin/hail generate zsh) \
      --fish <($out/bin/hail generate fish)
  '';

  meta = {
    description = cargoToml.package.description;
    license = lib.licenses.bsd3;
    mainProgram = "hail";
    platforms = lib.platforms.linux;
  };
}
