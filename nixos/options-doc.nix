# The options of services.hail.<name> as a Markdown table, from the module's own declarations
# (scripts/gen-options-doc puts it into docs/src/reference/nixos-options.md).
#   nix-instantiate --eval --strict --json nixos/options-doc.nix --argstr nixpkgsLib "$NIXPKGS_LIB"
{ nixpkgsLib }:

let
  lib = import nixpkgsLib;

  evaluated = lib.evalModules {
    modules = [
      ./module.nix
      {
        # Only the declarations are read; `pkgs.hail` is shown through its defaultText.
        _module.args.pkgs = { };
        _module.check = false;
      }
    ];
  };

  docs = lib.filter (
    opt: opt.visible && !opt.internal && lib.hasPrefix "services.hail.<name>." opt.name
  ) (lib.optionAttrSetToDocList evaluated.options);

  # One table cell: a single line, with the table's separator escaped.
  oneLine =
    text:
    lib.concatStringsSep " " (
      lib.filter (line: line != "") (map lib.trim (lib.splitString "\n" text))
    );
  cell = text: lib.replaceStrings [ "|" ] [ "\\|" ] (oneLine text);
  code = value: "`" + cell value.text + "`";

  row =
    opt:
    "| `${opt.name}` | ${cell opt.type} | ${
      if opt ? default then code opt.default else "required"
    } | ${cell opt.description}${lib.optionalString (opt ? example) " Example: ${code opt.example}."} |";
in
lib.concatStringsSep "\n" (
  [
    "| option | type | default | description |"
    "| --- | --- | --- | --- |"
  ]
  ++ map row docs
)
+ "\n"
