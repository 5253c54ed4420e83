#!/usr/bin/env bash
# Builds virtdeck's packages from a binary that is already built:
#   scripts/package.sh [--profile release|dev] [--out DIR]
#       .deb (cargo-deb) and .rpm (cargo-generate-rpm) of target/<profile>/virtdeck
#   scripts/package.sh --previous COMMIT --out DIR
#       the .deb of an earlier commit's binary as version 0.1.0, with today's packaging
#       (for the upgrade test: the earlier binary made the database the new one migrates).
#       Built once in target/previous-build/ and cached by commit.
# `make deb`/`make rpm` build the release binary first; `make test` packages the dev one.
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$repo"
profile=release
out=target/packages
previous=
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --previous) previous=$2; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev] [--out DIR] [--previous COMMIT]" >&2; exit 2 ;;
  esac
done
export PATH=$HOME/.cargo/bin:$PATH
for tool in cargo-deb cargo-generate-rpm; do
  command -v "$tool" >/dev/null || {
    echo "$tool is missing: run scripts/install-deps.sh package" >&2
    exit 1
  }
done
case $profile in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac
mkdir -p "$out"

if [ -n "$previous" ]; then
  commit=$(git rev-parse --verify "$previous^{commit}")
  build=$repo/target/previous-build
  bin=$build/target/debug/virtdeck
  if [ ! -x "$bin" ] || [ "$(cat "$build/commit" 2>/dev/null)" != "$commit" ]; then
    rm -rf "$build/src" && mkdir -p "$build/src"
    git archive "$commit" | tar -x -C "$build/src"
    # The earlier binary embeds static/vendor too.
    cp -r static/vendor "$build/src/static/"
    (cd "$build/src" && CARGO_TARGET_DIR=$build/target cargo build --locked --bin virtdeck)
    echo "$commit" >"$build/commit"
  fi
  # Today's packaging around the earlier binary: cargo-deb takes target/release/virtdeck
  # from CARGO_TARGET_DIR/<profile>.
  target/debug/virtdeck package-files target/package-files
  CARGO_TARGET_DIR=$build/target cargo deb --no-build --profile dev --no-strip \
    --deb-version 0.1.0-1 --output "$out/virtdeck_0.1.0-1_amd64.deb"
  echo "previous package (commit ${commit:0:12}): $out/virtdeck_0.1.0-1_amd64.deb"
  exit 0
fi

[ -x "target/$dir/virtdeck" ] || {
  echo "target/$dir/virtdeck is missing: build it first (cargo build --profile $profile)" >&2
  exit 1
}
"target/$dir/virtdeck" package-files target/package-files
strip=()
[ "$profile" = dev ] && strip=(--no-strip)
cargo deb --no-build --profile "$profile" "${strip[@]}" --output "$out/"
cargo generate-rpm --profile "$profile" --output "$out/"
ls -l "$out"
