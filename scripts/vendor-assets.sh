#!/usr/bin/env bash
# Installs the browser code virtdeck vendors from npm, pinned by vendor-js/package-lock.json,
# into static/vendor/ (embedded in the binary at build time, so run this before cargo build):
#   static/vendor/novnc/   @novnc/novnc (core/ and vendor/ ES modules) + LICENSE.txt, AUTHORS
#   static/vendor/xterm/   @xterm/xterm (xterm.mjs, xterm.css) + @xterm/addon-fit, with LICENSEs
#   static/vendor/swagger-ui/  swagger-ui-dist (swagger-ui-bundle.js, swagger-ui.css) + LICENSE, NOTICE
# Cached: nothing is done when static/vendor is newer than the lock file and this script.
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
src=$repo/vendor-js
out=$repo/static/vendor
stamp=$out/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt "$src/package-lock.json" ] && [ "$stamp" -nt "${BASH_SOURCE[0]}" ]; then
  echo "vendored browser code up to date in $out"
  exit 0
fi
command -v npm >/dev/null || {
  echo "npm is missing: install it (Debian: apt-get install npm; scripts/install-deps.sh does)" >&2
  exit 1
}
(cd "$src" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
nm=$src/node_modules
rm -rf "$out.tmp" && mkdir -p "$out.tmp/novnc" "$out.tmp/xterm" "$out.tmp/swagger-ui"
cp -r "$nm/@novnc/novnc/core" "$nm/@novnc/novnc/vendor" "$out.tmp/novnc/"
cp "$nm/@novnc/novnc/LICENSE.txt" "$nm/@novnc/novnc/AUTHORS" "$nm/@novnc/novnc/package.json" "$out.tmp/novnc/"
cp "$nm/@xterm/xterm/lib/xterm.mjs" "$nm/@xterm/xterm/css/xterm.css" "$out.tmp/xterm/"
cp "$nm/@xterm/xterm/LICENSE" "$out.tmp/xterm/LICENSE"
cp "$nm/@xterm/addon-fit/lib/addon-fit.mjs" "$out.tmp/xterm/"
cp "$nm/@xterm/addon-fit/LICENSE" "$out.tmp/xterm/LICENSE.addon-fit"
cp "$nm/swagger-ui-dist/swagger-ui-bundle.js" "$nm/swagger-ui-dist/swagger-ui.css" \
  "$nm/swagger-ui-dist/LICENSE" "$nm/swagger-ui-dist/NOTICE" "$out.tmp/swagger-ui/"
for p in @novnc/novnc @xterm/xterm @xterm/addon-fit swagger-ui-dist; do
  node -e "const p=require('$nm/$p/package.json'); console.log(p.name+' '+p.version+' '+p.license)"
done >"$out.tmp/VERSIONS"
rm -rf "$out" && mv "$out.tmp" "$out"
touch "$stamp"
echo "vendored browser code installed in $out:"
cat "$out/VERSIONS"
