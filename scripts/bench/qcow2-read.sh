#!/usr/bin/env bash
# Reading a qcow2 base: `stackbd serve --export x=base.qcow2` against `qemu-nbd -r -f qcow2`,
# each on its own free port of 127.0.0.1, started fresh for every workload and stopped by pid.
# The base is 1 GiB, 25% allocated with random data (256 KiB at the start of every MiB, made
# with qemu-img convert from a sparse raw file), 64 KiB clusters; its file is read once before
# the runs so both servers start from a warm page cache.
#
# Workloads (fio, nbd ioengine, one job): 4 KiB random reads at queue depth 32 and sequential
# 1 MiB reads at queue depth 8, time-based. Prints IOPS and MiB/s of each and stackbd's ratio
# to qemu-nbd; for reference also stackbd serving the same disk as the sparse RAW file it was
# made from (what the server costs without qcow2). A figure, not a test: nothing is asserted.
#
# Usage: bash scripts/bench/qcow2-read.sh [--runtime SECONDS (10)] [--runs N (1)] [--no-build]
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tool="$repo/scripts/bench/tool.mjs"
runtime=10
runs=1
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runtime) runtime=${2:?--runtime needs seconds}; shift ;;
    --runs) runs=${2:?--runs needs a number}; shift ;;
    --no-build) build=0 ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

say() { printf 'qcow2-read [%4ds]: %s\n' "$SECONDS" "$*" >&2; }
for t in node qemu-img qemu-nbd fio nbdinfo; do
  command -v "$t" >/dev/null || { say "$t is missing (bash scripts/install-test-deps.sh)"; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stackbd-qcow2-bench.XXXXXX")
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

if [[ $build -eq 1 ]]; then (cd "$repo" && npm run build --silent); fi
say "making the 1 GiB base (25% random data)"
node "$tool" make-sparse "$tmp/sparse.raw" 1G 256K 1M
qemu-img convert -q -O qcow2 "$tmp/sparse.raw" "$tmp/base.qcow2"
cat "$tmp/base.qcow2" "$tmp/sparse.raw" >/dev/null

start_server() { # start_server stackbd|qemu-nbd: sets server_pid and uri
  local port
  port=$(node "$tool" free-port)
  case "$1" in
    stackbd) node "$repo/bin/stackbd.js" serve --listen "127.0.0.1:$port" --export "x=$tmp/base.qcow2" --log-level warn </dev/null >"$tmp/server.log" 2>&1 & ;;
    stackbd-raw) node "$repo/bin/stackbd.js" serve --listen "127.0.0.1:$port" --export "x=$tmp/sparse.raw" --log-level warn </dev/null >"$tmp/server.log" 2>&1 & ;;
    qemu-nbd) qemu-nbd -r -t -e 64 -f qcow2 -b 127.0.0.1 -p "$port" -x x "$tmp/base.qcow2" </dev/null >"$tmp/server.log" 2>&1 & ;;
  esac
  server_pid=$!
  uri="nbd://127.0.0.1:$port/x"
  local i
  for ((i = 0; i < 300; i++)); do
    nbdinfo --size "$uri" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  say "$1 did not start:"; cat "$tmp/server.log" >&2; exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# measure SERVER WORKLOAD: writes "IOPS MiB/s" of one fio run to $tmp/result (no subshell:
# the server's pid stays known to the cleanup)
measure() {
  local args
  case "$2" in
    rand-read-4k-qd32) args="--rw=randread --bs=4k --iodepth=32" ;;
    seq-read-1m) args="--rw=read --bs=1M --iodepth=8" ;;
  esac
  start_server "$1"
  # shellcheck disable=SC2086
  fio --name="$2" --ioengine=nbd --uri="$uri" $args --time_based --runtime="$runtime" \
    --output-format=json --output="$tmp/fio.json" >/dev/null
  stop_server
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).jobs[0].read;
    console.log(r.iops.toFixed(0), (r.bw_bytes / 1048576).toFixed(1));
  ' "$tmp/fio.json" >"$tmp/result"
}

printf '%-20s %-8s %10s %10s\n' workload server IOPS 'MiB/s'
for workload in rand-read-4k-qd32 seq-read-1m; do
  for ((run = 1; run <= runs; run++)); do
    measure stackbd "$workload"
    read -r s_iops s_bw <"$tmp/result"
    measure qemu-nbd "$workload"
    read -r q_iops q_bw <"$tmp/result"
    measure stackbd-raw "$workload"
    read -r r_iops r_bw <"$tmp/result"
    printf '%-20s %-8s %10s %10s\n' "$workload" stackbd "$s_iops" "$s_bw"
    printf '%-20s %-8s %10s %10s\n' "$workload" qemu-nbd "$q_iops" "$q_bw"
    printf '%-20s %-8s %10s %10s\n' "$workload" ratio "$(node -e 'console.log((process.argv[1] / process.argv[2]).toFixed(2) + "x")' "$s_iops" "$q_iops")" \
      "$(node -e 'console.log((process.argv[1] / process.argv[2]).toFixed(2) + "x")' "$s_bw" "$q_bw")"
    printf '%-20s %-8s %10s %10s   (reference: stackbd serving the sparse RAW)\n' "$workload" raw "$r_iops" "$r_bw"
  done
done
