# The hail module with hail's own package as every instance's default `package`, so it works
# without an overlay (`pkgs.hail` does not exist in nixpkgs), also where `pkgs` is read-only
# (`nixpkgs.pkgs`, NixOS tests). The flake's `nixosModules.default`; without flakes:
#   imports = [ "${hail-source}/nixos" ];
{ lib, pkgs, ... }:
{
  imports = [ ./module.nix ];

  # Declared again only to add a default to each instance; the module system merges this
  # declaration into module.nix's one.
  options.services.hail = lib.mkOption {
    type = lib.types.attrsOf (
      lib.types.submodule {
        config.package = lib.mkDefault (pkgs.callPackage ../nix/package.nix { });
      }
    );
  };
}
