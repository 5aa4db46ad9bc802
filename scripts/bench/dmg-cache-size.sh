#!/usr/bin/env bash
# The DMG reader's decoded-chunk cache size against the speed and memory of serving a DMG:
# `nbdcopy` of a whole 1 GiB UDZO DMG served by `stackbd serve` (a unix socket), once per cache
# size per run, the sizes interleaved within each run. Prints per size the median wall time,
# server CPU time and peak RSS (VmHWM). A figure, not a test: nothing is asserted.
#
#   bash scripts/bench/dmg-cache-size.sh [--sizes 32,16,8,4] [--runs 3] [--connections N] [--no-build]
#
# The cache size is DMG_DEFAULT_CACHE_BYTES (src/formats/dmg/image.ts); each size runs a copy of
# dist/ in a temp dir with that constant changed (the checkout is not touched). The disk: every
# fourth MiB random, the rest compressible text, as scripts/bench/dmg-read.sh; converted to
# UDZO by `stackbd convert`. --connections passes nbdcopy's --connections and --threads
# (default: nbdcopy's own, capped at the number of cores).
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
sizes=32,16,8,4
runs=3
connections=""
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sizes) sizes=${2:?--sizes needs a list of MiB}; shift ;;
    --runs) runs=${2:?--runs needs a number}; shift ;;
    --connections) connections=${2:?--connections needs a number}; shift ;;
    --no-build) build=0 ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
say() { printf 'dmg-cache-size [%4ds]: %s\n' "$SECONDS" "$*" >&2; }
for t in node nbdcopy nbdinfo sha256sum; do command -v "$t" >/dev/null || { say "$t is missing"; exit 1; }; done
if [[ $build -eq 1 ]]; then (cd "$repo" && npm run build --silent); fi
grep -q '^export const DMG_DEFAULT_CACHE_BYTES = ' "$repo/dist/formats/dmg/image.js" || { say "DMG_DEFAULT_CACHE_BYTES not found in dist/formats/dmg/image.js"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stackbd-dmg-cache.XXXXXX")
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
clk_tck=$(getconf CLK_TCK)
cpu_ticks() { local s; s=$(cat "/proc/$1/stat"); s=${s##*) }; read -r -a f <<<"$s"; echo $((f[11] + f[12])); }

say "making the 1 GiB UDZO DMG"
(yes 'stackbd dmg benchmark: a line of compressible text, sector after sector, 0123456789' || true) | head -c $((3 * 1024 * 1024)) >"$tmp/text.bin"
for ((i = 0; i < 256; i++)); do head -c $((1024 * 1024)) /dev/urandom; cat "$tmp/text.bin"; done >"$tmp/disk.raw"
want=$(sha256sum <"$tmp/disk.raw" | cut -d' ' -f1)
node "$repo/bin/stackbd.js" convert "$tmp/disk.raw" -O "$tmp/disk.dmg" >/dev/null
rm -f "$tmp/disk.raw"
cat "$tmp/disk.dmg" >/dev/null

IFS=, read -r -a list <<<"$sizes"
for mib in "${list[@]}"; do
  [[ $mib =~ ^[1-9][0-9]*$ ]] || { say "bad size $mib"; exit 2; }
  mkdir -p "$tmp/app-$mib"
  cp -r "$repo/bin" "$repo/dist" "$repo/package.json" "$tmp/app-$mib/"
  ln -s "$repo/node_modules" "$tmp/app-$mib/node_modules"
  sed -i "s/^export const DMG_DEFAULT_CACHE_BYTES = .*/export const DMG_DEFAULT_CACHE_BYTES = $mib * 1024 * 1024;/" "$tmp/app-$mib/dist/formats/dmg/image.js"
done

copy_args=()
[[ -n $connections ]] && copy_args=(--connections="$connections" --threads="$connections")
: >"$tmp/results"
for ((run = 1; run <= runs; run++)); do
  for mib in "${list[@]}"; do
    sock="$tmp/nbd.sock"
    rm -f "$sock"
    # The bin itself, as users run it: its interpreter line carries the server's memory options.
    "$tmp/app-$mib/bin/stackbd.js" serve --socket "$sock" --export "vm=$tmp/disk.dmg" --log-level warn </dev/null >"$tmp/server.log" 2>&1 &
    server_pid=$!
    for ((i = 0; i < 300; i++)); do
      [[ -S $sock ]] && nbdinfo --size "nbd+unix:///vm?socket=$sock" >/dev/null 2>&1 && break
      sleep 0.05
    done
    c0=$(cpu_ticks "$server_pid")
    t0=$EPOCHREALTIME
    nbdcopy "${copy_args[@]}" "nbd+unix:///vm?socket=$sock" null:
    t1=$EPOCHREALTIME
    c1=$(cpu_ticks "$server_pid")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server_pid/status")
    if [[ $run -eq 1 ]]; then
      got=$(nbdcopy "nbd+unix:///vm?socket=$sock" - | sha256sum | cut -d' ' -f1)
      [[ $got == "$want" ]] || { say "cache $mib MiB: served other bytes than the disk"; exit 1; }
    fi
    kill -TERM "$server_pid"
    wait "$server_pid" || { say "the server exited with status $?"; tail -n 20 "$tmp/server.log" >&2; exit 1; }
    server_pid=""
    awk -v m="$mib" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" -v t="$clk_tck" -v h="$hwm" \
      'BEGIN { printf "%s %.2f %.2f %.0f\n", m, b - a, c / t, h / 1024 }' | tee -a "$tmp/results" |
      awk -v r="$run" '{ printf "run %d: cache %s MiB: %s s wall, %s s server CPU, peak RSS %s MiB\n", r, $1, $2, $3, $4 }' >&2
  done
done

printf 'nbdcopy%s of a 1 GiB UDZO DMG (%s bytes) served by stackbd, median of %d runs:\n' "${connections:+ --connections=$connections}" "$(stat -c %s "$tmp/disk.dmg")" "$runs"
printf '%10s %10s %16s %14s\n' 'cache MiB' 'wall s' 'server CPU s' 'peak RSS MiB'
for mib in "${list[@]}"; do
  awk -v m="$mib" '$1 == m { w[n] = $2; c[n] = $3; h[n] = $4; n++ }
    function med(a, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } return n % 2 ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2 }
    END { printf "%10s %10.2f %16.2f %14.0f\n", m, med(w, n), med(c, n), med(h, n) }' "$tmp/results"
done
