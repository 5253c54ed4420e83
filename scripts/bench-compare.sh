#!/usr/bin/env bash
# An older commit's virtdeck measured beside this tree's, by the same harness (the scale
# part of `make bench`: start-up, the 1,000-VM list under wrk, Chromium, memory), one
# after the other in one run, for a change that must not make any figure worse (a
# refactor). Writes target/bench/compare.md.
#
#   scripts/bench-compare.sh REV [AFTER]   REV e.g. the commit before the change; AFTER
#                                           the commit after it (default: this tree)
#
# Needs what `make bench` needs (run it once, or `scripts/install-deps.sh bench`).
# BENCH_MEMORY_SECONDS (default 120 here) bounds the memory phase of each run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rev=${1:?usage: scripts/bench-compare.sh REV [AFTER]}
old=$(git rev-parse --short "$rev")
after_rev=${2:-}
out=$root/target/bench
mkdir -p "$out"
export BENCH_MEMORY_SECONDS=${BENCH_MEMORY_SECONDS:-120}

# The binary of commit $1, built in a worktree into this tree's target dir (the
# dependencies are built once for all), kept as target/bench/virtdeck-$1.
build_commit() {
    local tree=$out/tree-$1
    if [ ! -d "$tree" ]; then
        git worktree add --detach "$tree" "$1"
    fi
    # Browser code is vendored at build time; the older tree embeds this tree's copy.
    mkdir -p "$tree/static/vendor"
    cp -a "$root/static/vendor/." "$tree/static/vendor/"
    (cd "$tree" && CARGO_TARGET_DIR="$root/target" cargo build --release --locked)
    cp "$root/target/release/virtdeck" "$out/virtdeck-$1"
}
build_commit "$old"
after_bin=$root/target/release/virtdeck
new=$(git rev-parse --short HEAD)
if [ -n "$after_rev" ]; then
    new=$(git rev-parse --short "$after_rev")
    build_commit "$new"
    after_bin=$out/virtdeck-$new
fi
cargo build --release --locked
# The memory figures are measured against this reference program.
cargo build --release --locked --example libvirt_floor

# The other benches' figures are folded into the scale report when present; they are not
# part of this comparison, so they are set aside for the two runs.
aside=$(mktemp -d)
for f in upload migration fleet; do
    [ -e "$out/$f.json" ] && mv "$out/$f.json" "$aside/"
done
restore() { mv "$aside"/*.json "$out/" 2>/dev/null || true; rmdir "$aside"; }
trap restore EXIT

# Both runs count wrk's connection errors as a figure instead of stopping at the first
# (an older build may drop connections under load; that is part of the comparison).
export BENCH_COUNT_WRK_ERRORS=1
BENCH_VIRTDECK_BIN="$out/virtdeck-$old" BENCH_LABEL="before" cargo bench --locked --bench scale
BENCH_VIRTDECK_BIN="$after_bin" BENCH_LABEL="after" cargo bench --locked --bench scale

python3 - "$out" "$old" "$new" <<'PY'
import json, sys
out, old, new = sys.argv[1:4]
before = {f["key"]: f for f in json.load(open(f"{out}/report-before.json"))["figures"]}
after = {f["key"]: f for f in json.load(open(f"{out}/report-after.json"))["figures"]}
# Figures where more is better; every other unit (ms, MiB, bytes) is better smaller.
higher = {"req/s", "MiB/s", "requests"}  # "errors" and the rest: smaller is better
rows = []
for key, a in after.items():
    b = before.get(key)
    if not b:
        continue
    if not b["value"]:
        rows.append(f'| {a["section"]} | {a["label"]} | {b["value"]:.4g} {a["unit"]} | {a["value"]:.4g} {a["unit"]} | | |')
        continue
    change = (a["value"] - b["value"]) / b["value"] * 100
    better = change > 0 if a["unit"] in higher else change < 0
    word = "same" if abs(change) < 1 else ("better" if better else "worse")
    rows.append(f'| {a["section"]} | {a["label"]} | {b["value"]:.4g} {a["unit"]} | {a["value"]:.4g} {a["unit"]} | {change:+.1f} % | {word} |')
md = [f"# {old} (before) vs {new} (after), same harness, same machine, one run", "",
      "| section | figure | before | after | change | |", "|---|---|---|---|---|---|"] + rows
open(f"{out}/compare.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
echo "written: target/bench/compare.md"
