# MOCK of nixpkgs, for test/packaging/nix-files.test.ts only. nixpkgs cannot be
# fetched on the machines these tests run on (no network), so this stands in
# for the few parts of nixpkgs' `lib` and `pkgs` that nix/module.nix and
# flake.nix use, written with builtins only. It is NOT the module system:
#
# - mkOption records its arguments; evalModule fills in option defaults and
#   merges the test's settings over them (a type check per set value, no
#   priorities, no imports);
# - mkIf and mkMerge record their arguments; resolve pushes them down the way
#   the module system would for the shapes the module uses;
# - pkgs holds placeholder store paths and a writeShellScript that keeps its
#   text.
#
# So a test that passes here shows the module's own logic (options, flags,
# unit settings) is right; it says nothing about how real nixpkgs evaluates it.
let
  inherit (builtins)
    all
    attrNames
    concatLists
    concatStringsSep
    filter
    foldl'
    isAttrs
    isBool
    isInt
    isList
    isPath
    isString
    listToAttrs
    map
    mapAttrs
    replaceStrings
    stringLength
    substring
    ;

  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;

  type = name: check: { inherit name check; };

  lib = rec {
    inherit concatStringsSep hasPrefix;

    mkOption = args: args // { _type = "option"; };
    mkEnableOption = what: mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${what}.";
    };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkDefault = content: {
      _type = "override";
      priority = 1000;
      inherit content;
    };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };

    types = rec {
      bool = type "bool" isBool;
      str = type "str" isString;
      int = type "int" isInt;
      port = type "port" (v: isInt v && v >= 0 && v <= 65535);
      path = type "path" (v: isPath v || (isString v && hasPrefix "/" v));
      package = type "package" (v: isAttrs v || isString v);
      listOf = t: type "listOf ${t.name}" (v: isList v && all t.check v);
      nullOr = t: type "nullOr ${t.name}" (v: v == null || t.check v);
    };

    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalString = cond: s: if cond then s else "";
    concatMap = f: xs: concatLists (map f xs);
    concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
    removePrefix =
      prefix: s: if hasPrefix prefix s then substring (stringLength prefix) (stringLength s) s else s;
    escapeShellArg = arg: "'${replaceStrings [ "'" ] [ "'\\''" ] (toString arg)}'";
    escapeShellArgs = args: concatStringsSep " " (map escapeShellArg args);
    genAttrs =
      names: f:
      listToAttrs (
        map (name: {
          inherit name;
          value = f name;
        }) names
      );
    importJSON = path: builtins.fromJSON (builtins.readFile path);
    licenses.mit = "mit";
    platforms.linux = [
      "x86_64-linux"
      "aarch64-linux"
    ];
    # Sources become the list of their paths as strings (no copy to the store).
    fileset = {
      unions = paths: paths;
      toSource =
        { root, fileset }:
        {
          root = toString root;
          fileset = map toString fileset;
        };
    };
  };

  # Placeholder packages: attrsets with an outPath, as derivations interpolate.
  stubPackage = name: {
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  pkgs = {
    coreutils = stubPackage "coreutils";
    gnutar = stubPackage "gnutar";
    gzip = stubPackage "gzip";
    makeWrapper = stubPackage "make-wrapper-hook";
    nodejs_24 = stubPackage "nodejs-24";
    writeShellScript =
      name: text:
      stubPackage name
      // {
        text = "#!/bin/sh\n" + text;
      };
    # Returns its arguments, so a test can look at what the flake passed.
    buildNpmPackage = args: args // { _type = "buildNpmPackage"; };
    # A functor with an attribute, like nixpkgs' importNpmLock.
    importNpmLock = {
      __functor = _: args: args // { _type = "importNpmLock"; };
      npmConfigHook = stubPackage "npm-config-hook";
    };
  };

  isOption = v: isAttrs v && (v._type or null) == "option";
  isTagged = tag: v: isAttrs v && (v._type or null) == tag;

  # Option tree -> tree of defaults (an option without a default is left out).
  defaults =
    opts:
    listToAttrs (
      concatLists (
        map (
          name:
          let
            o = opts.${name};
          in
          if isOption o then
            (if o ? default then [ { inherit name; value = o.default; } ] else [ ])
          else
            [ { inherit name; value = defaults o; } ]
        ) (attrNames opts)
      )
    );

  # Every value the test sets must pass its option's type check.
  typeErrors =
    prefix: opts: set:
    concatLists (
      map (
        name:
        let
          o = opts.${name} or null;
          v = set.${name};
          where = "${prefix}${name}";
        in
        if o == null then
          [ "${where}: no such option" ]
        else if isOption o then
          (if o.type.check v then [ ] else [ "${where}: not a ${o.type.name}" ])
        else
          typeErrors "${where}." o v
      ) (attrNames set)
    );

  # a // b, recursing into attrsets that are not options or derivations.
  merge =
    a: b:
    a
    // mapAttrs (
      name: v:
      if a ? ${name} && isAttrs v && isAttrs a.${name} && !(v ? outPath) then merge a.${name} v else v
    ) b;

  absent = {
    _type = "absent";
  };

  # Pushes mkIf/mkMerge/mkDefault down into plain values.
  resolve =
    v:
    if isTagged "if" v then
      (if v.condition then resolve v.content else absent)
    else if isTagged "merge" v then
      foldl' (acc: x: mergeConfig acc (resolve x)) { } v.contents
    else if isTagged "override" v then
      resolve v.content
    else if isAttrs v && !(v ? outPath) then
      let
        resolved = mapAttrs (_: resolve) v;
      in
      listToAttrs (
        map (name: {
          inherit name;
          value = resolved.${name};
        }) (filter (name: !(isTagged "absent" resolved.${name})) (attrNames resolved))
      )
    else
      v;

  # Merges definitions as the module system does for these shapes: attrsets
  # recursively, lists concatenated (assertions), anything else must agree.
  mergeConfig =
    a: b:
    if isTagged "absent" b then
      a
    else
      a
      // mapAttrs (
        name: v:
        if !(a ? ${name}) then
          v
        else if isList v && isList a.${name} then
          a.${name} ++ v
        else if isAttrs v && isAttrs a.${name} && !(v ? outPath) then
          mergeConfig a.${name} v
        else if v == a.${name} then
          v
        else
          throw "stub: conflicting definitions of ${name}"
      ) b;

  # Evaluates a NixOS-style module function with the settings `config` (user
  # settings, type-checked) and `host` (what other NixOS modules would define,
  # e.g. nix.package). Returns the module's resolved config and the full
  # configuration it saw.
  evalModule =
    {
      module,
      config ? { },
      host ? { },
      pkgs ? pkgsStub,
    }:
    let
      out = module {
        inherit lib pkgs;
        config = full;
      };
      errors = typeErrors "" out.options config;
      full = merge (merge host (defaults out.options)) config;
    in
    if errors != [ ] then
      throw "stub: ${concatStringsSep "; " errors}"
    else
      {
        config = resolve out.config;
        inherit full;
      };

  pkgsStub = pkgs;
in
{
  inherit
    lib
    pkgs
    evalModule
    resolve
    ;
}
