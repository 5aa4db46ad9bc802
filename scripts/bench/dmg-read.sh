#!/usr/bin/env bash
# Reading a whole 1 GiB UDZO DMG: `stackbd serve` + `nbdcopy` against `7zz x` of the same file.
#
#   bash scripts/bench/dmg-read.sh [--keep-tmp]
#
# Makes a 1 GiB RAW disk (every fourth MiB random, the rest compressible text), converts it to
# a UDZO DMG with `stackbd convert -O disk.dmg`, then times, once each:
#   - stackbd: `stackbd serve` on a unix socket with the DMG as its export, `nbdcopy` of the
#     whole export to null: (the server is started before the clock starts and stopped by its pid);
#   - 7-Zip: `7zz x -tdmg -so` of the DMG to /dev/null (extraction to stdout, no file written).
# Checks that both give the bytes of the RAW disk (sha256), then prints the two times.
# Needs node (with `npm run build` done), nbdcopy and nbdinfo (libnbd-bin), 7zz (7zip). Not part of `npm test`.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
keep_tmp=0
[[ ${1:-} == --keep-tmp ]] && keep_tmp=1
say() { printf 'dmg-read [%4ds]: %s\n' "$SECONDS" "$*" >&2; }
for t in node nbdcopy nbdinfo 7zz sha256sum; do command -v "$t" >/dev/null || { say "$t is missing"; exit 1; }; done
[[ -f $repo/dist/cli/main.js ]] || { say "run npm run build first"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stackbd-dmg-read.XXXXXX")
server_pid=""
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ $keep_tmp -eq 1 ]]; then say "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
stackbd() { node "$repo/bin/stackbd.js" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

say "making a 1 GiB RAW disk (25% random, 75% compressible text)"
text="$tmp/text.bin"
(yes 'stackbd dmg benchmark: a line of compressible text, sector after sector, 0123456789' || true) | head -c $((3 * 1024 * 1024)) >"$text"
{
  for ((i = 0; i < 256; i++)); do
    head -c $((1024 * 1024)) /dev/urandom
    cat "$text"
  done
} >"$tmp/disk.raw"
want=$(sha256sum <"$tmp/disk.raw" | cut -d' ' -f1)

say "converting it to UDZO"
start=$(now)
stackbd convert "$tmp/disk.raw" -O "$tmp/disk.dmg"
convert_s=$(since "$start")
dmg_bytes=$(stat -c %s "$tmp/disk.dmg")
say "disk.dmg: $dmg_bytes bytes, made in ${convert_s} s"
rm -f "$tmp/disk.raw"
# Both readers start from the same page cache state: the DMG file cached.
cat "$tmp/disk.dmg" >/dev/null

say "stackbd serve + nbdcopy"
sock="$tmp/nbd.sock"
# node itself in the background (not a shell function), so that $! is the server's own pid.
node "$repo/bin/stackbd.js" serve --socket "$sock" --export "vm=$tmp/disk.dmg" --log-level warn </dev/null >"$tmp/server.log" 2>&1 &
server_pid=$!
for ((i = 0; i < 300; i++)); do
  [[ -S $sock ]] && nbdinfo --size "nbd+unix:///vm?socket=$sock" >/dev/null 2>&1 && break
  sleep 0.05
done
start=$(now)
nbdcopy "nbd+unix:///vm?socket=$sock" null:
stackbd_s=$(since "$start")
got=$(nbdcopy "nbd+unix:///vm?socket=$sock" - | sha256sum | cut -d' ' -f1)
server_rss_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server_pid/status")
kill -TERM "$server_pid"
wait "$server_pid" || { say "the server exited with status $?"; tail -n 20 "$tmp/server.log" >&2; exit 1; }
server_pid=""
[[ $got == "$want" ]] || { say "stackbd served other bytes than the disk"; exit 1; }

say "7zz x -tdmg -so"
start=$(now)
7zz x -tdmg -so "$tmp/disk.dmg" >/dev/null
sevenzip_s=$(since "$start")
got=$(7zz x -tdmg -so "$tmp/disk.dmg" | sha256sum | cut -d' ' -f1)
[[ $got == "$want" ]] || { say "7zz extracted other bytes than the disk"; exit 1; }

printf '1 GiB UDZO DMG (%s bytes; convert %s s), read whole:\n' "$dmg_bytes" "$convert_s"
printf '  stackbd serve + nbdcopy: %s s (server peak RSS %s MiB)\n' "$stackbd_s" "$((server_rss_kib / 1024))"
printf '  7zz x -tdmg -so:         %s s\n' "$sevenzip_s"
