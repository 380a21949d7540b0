# package.json and package-lock.json as nixpkgs' importNpmLock needs them for
# the runtime build of fleetmesh (flake.nix). Builtins only, so that
# test/packaging can evaluate it without nixpkgs.
#
# Two changes to the files as committed:
#
# - Every package gets its `resolved` tarball URL. This lockfile carries none
#   (npm leaves them out when `omit-lockfile-registry-resolved` is set), and
#   importNpmLock fetches each package from `resolved` with `integrity` as the
#   hash: without it, evaluation stops at "attribute 'resolved' missing". The
#   URL is the registry's fixed layout,
#   <registry>/<name>/-/<name without scope>-<version>.tgz. An entry that
#   already has `resolved` keeps it.
# - devDependencies and the packages only they need (`"dev": true`) are
#   dropped. The runtime needs none of them, and they include the `node`
#   package, whose install script downloads a Node binary (no network in a Nix
#   build), and the platform binaries of Biome and TypeScript, which
#   importNpmLock would otherwise download for every platform.
{
  package,
  packageLock,
  registry ? "https://registry.npmjs.org",
}:
let
  inherit (builtins)
    attrNames
    elemAt
    filter
    isString
    length
    listToAttrs
    removeAttrs
    split
    ;
  last = xs: elemAt xs (length xs - 1);
  parts = sep: s: filter isString (split sep s);

  # "node_modules/a/node_modules/@s/b" -> "@s/b", unless the entry names the
  # real package (an alias: "node_modules/x": { "name": "y" }).
  nameOf = path: module: module.name or (last (parts "node_modules/" path));
  tarball = name: version: "${registry}/${name}/-/${last (parts "/" name)}-${version}.tgz";

  fetched =
    path: module:
    path != ""
    && !(module ? resolved)
    && !(module.link or false)
    && !(module.inBundle or false)
    && module ? version;

  withResolved =
    path: module:
    if fetched path module then module // { resolved = tarball (nameOf path module) module.version; } else module;

  runtimePaths = filter (path: !(packageLock.packages.${path}.dev or false)) (
    attrNames packageLock.packages
  );
  packages = listToAttrs (
    map (path: {
      name = path;
      value = withResolved path packageLock.packages.${path};
    }) runtimePaths
  );
in
{
  package = removeAttrs package [ "devDependencies" ];
  packageLock = packageLock // {
    packages = packages // {
      "" = removeAttrs packages."" [ "devDependencies" ];
    };
  };
}
