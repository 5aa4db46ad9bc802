#!/usr/bin/env bash
# Benchmarks stackbd against nbdkit and qemu-nbd on loopback, side by side, in one run (issue 5).
#
#   bash scripts/bench.sh [--quick] [--runs N] [--runtime S] [--output FILE] [--no-build]
#                         [--servers a,b,...] [--workloads a,b,...] [--skip-rss] [--keep-tmp]
#                         [--skip-bulk] [--skip-many-exports]
#   npm run bench -- --quick
#
# Every server is started fresh for every run of every workload (on a free port of 127.0.0.1 it
# picks itself, with a fresh overlay for the stacked servers), measured (server CPU time from
# /proc/PID/stat, peak RSS from VmHWM in /proc/PID/status), and stopped by its pid. The report
# (medians of the runs, ratios stackbd / peer, targets) is printed and written as markdown to
# --output (default docs/performance.md). Not part of `npm test`.
#
# Full run (default): 3 runs, fio 10 s after a 1 s ramp, 1 GiB of random writes for the RSS case
# (about 30 minutes). --quick: 3 runs, fio 3 s, 256 MiB for the RSS case (about 12 minutes).
# Bulk copy (issue 13; --skip-bulk leaves it out): `stackbd convert` of the 25%-allocated stack
# vs `qemu-img convert` of the qcow2 peer and `nbdcopy` from nbdkit-cow, to a RAW file.
# Many exports (issue 13; --skip-many-exports): scripts/bench/many-exports.sh, 500 exports and
# 256 fio connections, stackbd vs qemu-storage-daemon (about 10 minutes; --quick: 100 exports,
# 64 connections, 10 s).
# Servers: stackbd-raw stackbd-stack nbdkit-file nbdkit-cow qemu-nbd-qcow2 nbdkit-null
# Workloads: seq-read seq-write rand-read-qd1 rand-read-qd32 rand-write-qd1 rand-write-qd32
#            convert nbdcopy-c1 nbdcopy-c4
# Foreign bases (scripts/bench/foreign.sh): servers stackbd-dmg 7zz-x stackbd-qcow2
# qemu-nbd-r-qcow2, workloads dmg-read qcow2-rand-read-qd32 qcow2-seq-read (each pairs only
# with the other), e.g. --workloads dmg-read,qcow2-rand-read-qd32,qcow2-seq-read.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tool="$repo/scripts/bench/tool.mjs"
command_line="bash scripts/bench.sh${*:+ $*}"

all_servers=(stackbd-raw stackbd-stack nbdkit-file nbdkit-cow qemu-nbd-qcow2 nbdkit-null)
all_workloads=(seq-read seq-write rand-read-qd1 rand-read-qd32 rand-write-qd1 rand-write-qd32 convert nbdcopy-c1 nbdcopy-c4)
# Foreign bases (issue 12): servers, workloads and their runs live in scripts/bench/foreign.sh.
# shellcheck source=bench/foreign.sh
source "$repo/scripts/bench/foreign.sh"
all_servers+=("${foreign_servers[@]}")
all_workloads+=("${foreign_workloads[@]}")

quick=0
runs=""
runtime=""
output="$repo/docs/performance.md"
build=1
servers_csv=""
workloads_csv=""
skip_rss=0
keep_tmp=0
skip_bulk=0
skip_many=0
many_failed=0

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; }
say() { printf 'bench [%4ds]: %s\n' "$SECONDS" "$*" >&2; }
die() { say "$*"; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --runs) runs=${2:?--runs needs a number}; shift ;;
    --runtime) runtime=${2:?--runtime needs seconds}; shift ;;
    --output) output=${2:?--output needs a file}; shift ;;
    --no-build) build=0 ;;
    --servers) servers_csv=${2:?--servers needs a list}; shift ;;
    --workloads) workloads_csv=${2:?--workloads needs a list}; shift ;;
    --skip-rss) skip_rss=1 ;;
    --skip-bulk) skip_bulk=1 ;;
    --skip-many-exports) skip_many=1 ;;
    --keep-tmp) keep_tmp=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

if [[ $quick -eq 1 ]]; then
  runs=${runs:-3}; runtime=${runtime:-3}; ramp=0; rss_io=256M
else
  runs=${runs:-3}; runtime=${runtime:-10}; ramp=1; rss_io=1G
fi
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number"
[[ $runtime =~ ^[1-9][0-9]*$ ]] || die "--runtime must be whole seconds"
[[ $runs -ge 3 ]] || say "warning: fewer than 3 runs; the medians are not robust"

in_list() { local x=$1; shift; local y; for y in "$@"; do [[ $x == "$y" ]] && return 0; done; return 1; }
servers=("${all_servers[@]}")
if [[ -n $servers_csv ]]; then
  IFS=, read -r -a servers <<<"$servers_csv"
  for s in "${servers[@]}"; do in_list "$s" "${all_servers[@]}" || die "unknown server $s (${all_servers[*]})"; done
fi
workloads=("${all_workloads[@]}")
if [[ -n $workloads_csv ]]; then
  IFS=, read -r -a workloads <<<"$workloads_csv"
  for w in "${workloads[@]}"; do in_list "$w" "${all_workloads[@]}" || die "unknown workload $w (${all_workloads[*]})"; done
fi

# ---------------------------------------------------------------------------------------------
# Tools, build, temp dir, cleanup

bash "$repo/scripts/install-test-deps.sh" --if-missing --bench
for t in node nbdkit qemu-nbd qemu-img fio nbdcopy nbdinfo; do
  command -v "$t" >/dev/null || die "$t is not installed"
done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd ioengine (fio --enghelp=nbd failed)"

if [[ $build -eq 1 ]]; then
  say "building stackbd (npm run build)"
  (cd "$repo" && npm run build --silent) || die "npm run build failed"
fi
[[ -f $repo/dist/cli/main.js ]] || die "dist/ is missing: run npm run build"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/stackbd-bench.XXXXXX")
shm=""           # a second temp dir on tmpfs for the 1 TiB ASIF of the RSS case, when there is room
pids=()          # every server this script started and has not reaped yet
clk_tck=$(getconf CLK_TCK)

stop_pid() { # stop_pid PID: SIGTERM, wait up to 60 s, then SIGKILL; returns the exit status
  local pid=$1 i state status=0 stopped=0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 600; i++)); do
    state=$(proc_state "$pid")
    if [[ $state == gone || $state == Z ]]; then stopped=1; break; fi
    sleep 0.1
  done
  if [[ $stopped -eq 0 ]]; then
    say "pid $pid did not stop within 60 s of SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || status=$?
  local kept=() p
  for p in "${pids[@]}"; do [[ $p != "$pid" ]] && kept+=("$p"); done
  pids=("${kept[@]+"${kept[@]}"}")
  return "$status"
}

cleanup() {
  local status=$? p
  trap - EXIT INT TERM
  for p in "${pids[@]+"${pids[@]}"}"; do
    say "stopping server pid $p"
    stop_pid "$p" || true
  done
  # The measurements outlive a failed or interrupted run: report.mjs can be run on them again.
  if [[ -s ${results:-} ]]; then cp "$results" "${TMPDIR:-/tmp}/stackbd-bench-results.jsonl" 2>/dev/null && say "rows measured: ${TMPDIR:-/tmp}/stackbd-bench-results.jsonl"; fi
  if [[ $keep_tmp -eq 1 ]]; then say "kept $tmp $shm"; else rm -rf "$tmp" ${shm:+"$shm"}; fi
  exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# /proc helpers. The comm field may hold spaces, so fields are counted after its closing ')'.
proc_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo gone; return; }
  stat=${stat##*) }
  echo "${stat%% *}"
}
cpu_ticks() { # utime + stime of a process (all its threads), in clock ticks
  local stat f
  stat=$(cat "/proc/$1/stat") || die "pid $1 vanished"
  read -r -a f <<<"${stat##*) }"
  echo $((f[11] + f[12]))
}
status_kib() { # status_kib PID FIELD (VmHWM, VmRSS)
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
now() { echo "$EPOCHREALTIME"; }
# CPU of the client tools: bash's `times` gives user+sys of every child the script has reaped.
# It must run in this shell (not in $(...) or a pipeline: a subshell has no children of its own),
# so snap_children writes it to a file and children_secs reads that file.
snap_children() { times >"$1"; }
children_secs() {
  awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } printf "%.3f", n }' "$1"
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
cpu_seconds() { awk -v a="$1" -v b="$2" -v t="$clk_tck" 'BEGIN { printf "%.2f", (b - a) / t }'; } # between two cpu_ticks

run_tool() { # run_tool NAME CMD...: runs a client tool; on failure shows its output and stops
  local name=$1; shift
  local log="$tmp/$name.log"
  if ! "$@" >"$log" 2>&1; then
    say "$name failed: $*"
    tail -n 40 "$log" >&2
    exit 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Images

size=1G
say "preparing images in $tmp"
node "$tool" fill-random "$tmp/base.raw" "$size"               # stack base: every byte is data
cp "$tmp/base.raw" "$tmp/raw.raw"                               # what the RAW servers serve (and write)
node "$tool" make-sparse "$tmp/sparse.raw" "$size" 64K 256K     # 25% allocated, for convert
size_bytes=$(stat -c %s "$tmp/base.raw")

# A snapshot of the build, so that a rebuild in the checkout during the run (others may run
# `npm test`, which builds) does not mix versions between runs.
# The code measured is what is copied here: its commit is taken now, not at the end (the checkout
# may change while the benchmark runs).
commit="$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$repo" && [[ -n $(git status --porcelain -- src bin 2>/dev/null) ]] && echo ' (with uncommitted changes in src/ or bin/)' || true)"
mkdir -p "$tmp/app"
cp -r "$repo/bin" "$repo/dist" "$repo/package.json" "$tmp/app/"
# The native addon goes with it (dist/io/native.js loads ../../native/build/Release/…): without
# it the copy would measure the portable fallback, not what `npm install` gives users.
if [[ -d $repo/native/build/Release ]]; then
  mkdir -p "$tmp/app/native/build"
  cp -r "$repo/native/build/Release" "$tmp/app/native/build/"
fi
ln -s "$repo/node_modules" "$tmp/app/node_modules"
stackbd_js="$tmp/app/bin/stackbd.js"
# Whether the copy measured loads the addon, as the server itself decides (STACKBD_NO_NATIVE=1
# included); the report says which path was measured, and a full run refuses to measure the
# fallback by accident.
native=$(node --input-type=module -e '
  const m = await import(process.argv[1]);
  const s = m.nativeStatus();
  console.log(s.loaded ? "loaded" : `not loaded (${s.reason})`);
' "$tmp/app/dist/io/native.js")
say "native fast paths: $native"
if [[ $native != loaded && ${STACKBD_NO_NATIVE:-} != 1 ]]; then
  die "the native addon does not load in the copy measured: $native (build it with npm rebuild, or set STACKBD_NO_NATIVE=1 to measure the portable path on purpose)"
fi
# Run the bin itself, as users do: its interpreter line carries the server's memory options.
stackbd() { "$stackbd_js" "$@"; }

# ---------------------------------------------------------------------------------------------
# Servers

server_pid=""
server_uri=""
server_log=""

# start_server SERVER IMAGE(full|sparse) RUN-TAG: starts it on a free port, waits until it
# answers NBD, and sets server_pid / server_uri.
start_server() {
  local server=$1 image=$2 tag=$3 port base raw cmd=()
  if [[ $image == sparse ]]; then base="$tmp/sparse.raw"; raw="$tmp/sparse.raw"; else base="$tmp/base.raw"; raw="$tmp/raw.raw"; fi
  port=$(node "$tool" free-port)
  server_log="$tmp/server-$tag.log"
  case "$server" in
    stackbd-raw)
      cmd=("$stackbd_js" serve --listen "127.0.0.1:$port" --export "bench=$raw" --log-level warn) ;;
    stackbd-stack)
      rm -f "$tmp/overlay.asif"
      run_tool stackbd-append stackbd append "$base" --new "$tmp/overlay.asif" --type overlay
      cmd=("$stackbd_js" serve --listen "127.0.0.1:$port" --export "bench=$base,$tmp/overlay.asif" --log-level warn) ;;
    nbdkit-file)
      cmd=(nbdkit -f --exit-with-parent -i 127.0.0.1 -p "$port" file "file=$raw") ;;
    nbdkit-cow)
      # The cow filter keeps its overlay in $TMPDIR (deleted when nbdkit exits): our temp dir.
      cmd=(env "TMPDIR=$tmp" nbdkit -f --exit-with-parent -i 127.0.0.1 -p "$port" --filter=cow file "file=$base") ;;
    qemu-nbd-qcow2)
      rm -f "$tmp/overlay.qcow2"
      run_tool qemu-img-create qemu-img create -q -f qcow2 -b "$base" -F raw "$tmp/overlay.qcow2"
      cmd=(qemu-nbd -t -e 64 --discard=unmap -f qcow2 -b 127.0.0.1 -p "$port" -x bench "$tmp/overlay.qcow2") ;;
    nbdkit-null)
      cmd=(nbdkit -f --exit-with-parent -i 127.0.0.1 -p "$port" null "size=$size_bytes") ;;
    *) foreign_server_cmd "$server" "$port" || die "$server has no server to start" ;;
  esac
  # env execs nbdkit, so $! is the server's own pid in every case.
  "${cmd[@]}" </dev/null >"$server_log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  server_uri="nbd://127.0.0.1:$port/bench"
  local i
  for ((i = 0; i < 300; i++)); do
    if [[ $(proc_state "$server_pid") == gone || $(proc_state "$server_pid") == Z ]]; then
      say "$server exited at start: ${cmd[*]}"
      tail -n 40 "$server_log" >&2
      exit 1
    fi
    nbdinfo --size "$server_uri" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  say "$server did not answer on $server_uri within 15 s: ${cmd[*]}"
  tail -n 40 "$server_log" >&2
  exit 1
}

stop_server() { # stops server_pid; a non-zero exit status is a failure
  local status=0
  stop_pid "$server_pid" || status=$?
  if [[ $status -ne 0 ]]; then
    say "server pid $server_pid exited with status $status"
    tail -n 40 "$server_log" >&2
    exit 1
  fi
  rm -f "$tmp/overlay.asif" "$tmp/overlay.qcow2"
}

# ---------------------------------------------------------------------------------------------
# Workloads

fio_args() { # fio_args WORKLOAD: the fio options of a workload
  case "$1" in
    seq-read) echo "--rw=read --bs=1M --iodepth=8" ;;
    seq-write) echo "--rw=write --bs=1M --iodepth=8" ;;
    rand-read-qd1) echo "--rw=randread --bs=4k --iodepth=1" ;;
    rand-read-qd32) echo "--rw=randread --bs=4k --iodepth=32" ;;
    rand-write-qd1) echo "--rw=randwrite --bs=4k --iodepth=1" ;;
    rand-write-qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
    *) return 1 ;;
  esac
}

applies() { # applies SERVER WORKLOAD: nbdkit-null is the ceiling of the fio read workloads only
  local foreign=0
  foreign_applies "$1" "$2" || foreign=$?
  [[ $foreign -ne 2 ]] && return "$foreign"
  [[ $1 != nbdkit-null ]] && return 0
  [[ $2 == seq-read || $2 == rand-read-qd1 || $2 == rand-read-qd32 ]]
}

results="$tmp/results.jsonl"
: >"$results"

# run_one SERVER WORKLOAD RUN
run_one() {
  local server=$1 workload=$2 run=$3 tag="$1-$2-$3" image=full
  if foreign_applies "$server" "$workload"; then foreign_run_one "$@"; return; fi
  [[ $workload == convert ]] && image=sparse
  start_server "$server" "$image" "$tag"
  local pid=$server_pid c0 c1 t0 t1 hwm rss extra=()
  c0=$(cpu_ticks "$pid")
  snap_children "$tmp/times0"
  t0=$(now)
  case "$workload" in
    seq-*|rand-*)
      local fio_out="$tmp/fio-$tag.json"
      # shellcheck disable=SC2046
      run_tool "fio-$tag" fio --name="$workload" --ioengine=nbd --uri="$server_uri" \
        $(fio_args "$workload") --time_based --runtime="$runtime" --ramp_time="$ramp" \
        --output-format=json --output="$fio_out"
      extra=(kind=fio "fio=$fio_out") ;;
    convert)
      run_tool "convert-$tag" qemu-img convert -O raw "$server_uri" "$tmp/convert-out.raw"
      extra=(kind=copy "bytes=$size_bytes") ;;
    nbdcopy-c1|nbdcopy-c4)
      local n=${workload#nbdcopy-c}
      # nbdcopy caps connections at its thread count (the number of cores by default): ask for
      # as many threads as connections so that 4 means 4 on a 2-core machine.
      run_tool "nbdcopy-$tag" nbdcopy --connections="$n" --threads="$n" "$server_uri" null:
      extra=(kind=copy "bytes=$size_bytes") ;;
  esac
  t1=$(now)
  snap_children "$tmp/times1"
  c1=$(cpu_ticks "$pid")
  hwm=$(status_kib "$pid" VmHWM)
  rss=$(status_kib "$pid" VmRSS)
  stop_server
  rm -f "$tmp/convert-out.raw"
  local cpu
  cpu=$(cpu_seconds "$c0" "$c1")
  local summary
  summary=$(node "$tool" record "$results" "server=$server" "workload=$workload" "run=$run" \
    "wall=$(elapsed "$t0" "$t1")" "cpu=$cpu" "hwm=$hwm" "rss=$rss" \
    "client=$(elapsed "$(children_secs "$tmp/times0")" "$(children_secs "$tmp/times1")")" "${extra[@]}")
  printf 'bench [%4ds]: run %d  %-15s %-16s %s\n' "$SECONDS" "$run" "$workload" "$server" "$summary" >&2
}

foreign_prepare "${workloads[@]}"

total=0
for w in "${workloads[@]}"; do for s in "${servers[@]}"; do if applies "$s" "$w"; then total=$((total + 1)); fi; done; done
say "$runs run(s) x $total server/workload pairs, fio runtime ${runtime}s"

# Runs are the outer loop, so that drift over the session is spread over every server alike.
for ((run = 1; run <= runs; run++)); do
  for w in "${workloads[@]}"; do
    for s in "${servers[@]}"; do
      # (not `applies && run_one`: errexit is off inside a function called from an && list)
      if applies "$s" "$w"; then run_one "$s" "$w" "$run"; fi
    done
  done
done

# ---------------------------------------------------------------------------------------------
# RSS of stackbd serving a 1 TiB virtual ASIF image after random 4 KiB writes

if [[ $skip_rss -eq 0 ]]; then
  say "RSS case: 1 TiB ASIF, $rss_io of random 4 KiB writes (iodepth 32)"
  # The 1 TiB ASIF ends up with one 4 KiB extent per write spread over ~1 TiB of file; deleting
  # that from a disk mounted with `discard` takes minutes, so it lives on tmpfs when there is
  # room (it does not change the server's RSS: tmpfs pages are not mapped into the server).
  big_dir=$tmp
  if [[ -d /dev/shm && -w /dev/shm && $(df -Pk /dev/shm | awk 'NR == 2 { print $4 }') -gt $((8 * 1024 * 1024)) ]]; then
    shm=$(mktemp -d /dev/shm/stackbd-bench.XXXXXX)
    big_dir=$shm
  fi
  run_tool stackbd-create stackbd create "$big_dir/big.asif" --size 1T
  port=$(node "$tool" free-port)
  server_log="$tmp/server-rss.log"
  "$stackbd_js" serve --listen "127.0.0.1:$port" --export "big=$big_dir/big.asif" --log-level warn \
    </dev/null >"$server_log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  server_uri="nbd://127.0.0.1:$port/big"
  for ((i = 0; ; i++)); do
    nbdinfo --size "$server_uri" >/dev/null 2>&1 && break
    [[ $i -lt 300 && $(proc_state "$server_pid") != gone ]] || { tail -n 40 "$server_log" >&2; die "stackbd (1 TiB ASIF) did not start"; }
    sleep 0.05
  done
  c0=$(cpu_ticks "$server_pid")
  hwm0=$(status_kib "$server_pid" VmHWM)
  snap_children "$tmp/times0"
  t0=$(now)
  run_tool fio-rss fio --name=rss-1tib --ioengine=nbd --uri="$server_uri" --rw=randwrite --bs=4k \
    --iodepth=32 --size=1T --io_size="$rss_io" --norandommap --randrepeat=0 \
    --output-format=json --output="$tmp/fio-rss.json"
  t1=$(now)
  snap_children "$tmp/times1"
  c1=$(cpu_ticks "$server_pid")
  hwm=$(status_kib "$server_pid" VmHWM)
  rss=$(status_kib "$server_pid" VmRSS)
  stop_server
  physical=$(( $(stat -c %b "$big_dir/big.asif") * $(stat -c %B "$big_dir/big.asif") ))
  summary=$(node "$tool" record "$results" server=stackbd-asif-1t workload=rss-1tib run=1 kind=rss \
    "wall=$(elapsed "$t0" "$t1")" "cpu=$(cpu_seconds "$c0" "$c1")" \
    "hwm=$hwm" "rss=$rss" "fio=$tmp/fio-rss.json" \
    "client=$(elapsed "$(children_secs "$tmp/times0")" "$(children_secs "$tmp/times1")")" "physical=$physical" "note=VmHWM before the writes: $((hwm0 / 1024)) MiB; image in $(df -P "$big_dir" | awk 'NR == 2 { print $1 }') ($(stat -f -c %T "$big_dir"))")
  say "RSS case: $summary"
  rm -f "$big_dir/big.asif"
fi

# ---------------------------------------------------------------------------------------------
# Bulk copy (issue 13, item 4): the 1 GiB 25%-allocated stack (sparse.raw + an empty overlay,
# as stackbd-stack serves it) flattened into a RAW file by each tool; the copying process's
# CPU and peak RSS from GNU time, nbdkit's CPU added for nbdcopy.

bulk_copy_one() { # bulk_copy_one TOOL RUN
  local copier=$1 run=$2 out="$tmp/bulk-out.raw" cmd=() c0=0 c1=0 pid="" t0 t1 server_hwm=0
  rm -f "$out"
  case "$copier" in
    stackbd-convert)
      rm -f "$tmp/overlay.asif"
      run_tool stackbd-append stackbd append "$tmp/sparse.raw" --new "$tmp/overlay.asif" --type overlay
      cmd=("$stackbd_js" convert "$tmp/sparse.raw" "$tmp/overlay.asif" -O "$out" -q) ;;
    qemu-img-convert)
      rm -f "$tmp/overlay.qcow2"
      run_tool qemu-img-create qemu-img create -q -f qcow2 -b "$tmp/sparse.raw" -F raw "$tmp/overlay.qcow2"
      cmd=(qemu-img convert -f qcow2 -O raw "$tmp/overlay.qcow2" "$out") ;;
    nbdcopy-cow)
      start_server nbdkit-cow sparse "bulk-$run"
      pid=$server_pid
      c0=$(cpu_ticks "$pid")
      cmd=(nbdcopy "$server_uri" "$out") ;;
  esac
  t0=$(now)
  run_tool "bulk-$copier-$run" /usr/bin/time -f '%U %S %M' -o "$tmp/bulk-time" "${cmd[@]}"
  t1=$(now)
  if [[ -n $pid ]]; then
    c1=$(cpu_ticks "$pid")
    server_hwm=$(status_kib "$pid" VmHWM)
    stop_server
  fi
  # The output must read like the stack (its empty overlay shows the base) and stay sparse.
  if [[ $run -eq 1 ]] && ! cmp -s "$out" "$tmp/sparse.raw"; then die "$copier: the output differs from the stack"; fi
  local user sys maxrss physical summary
  read -r user sys maxrss <"$tmp/bulk-time"
  physical=$(( $(stat -c %b "$out") * $(stat -c %B "$out") ))
  rm -f "$out" "$tmp/overlay.asif" "$tmp/overlay.qcow2"
  summary=$(node "$tool" record "$results" "server=$copier" workload=bulk-convert "run=$run" kind=copy \
    "wall=$(elapsed "$t0" "$t1")" "cpu=$(cpu_seconds "$c0" "$c1")" "hwm=$maxrss" "rss=$server_hwm" \
    "client=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" "bytes=$size_bytes" "physical=$physical")
  printf 'bench [%4ds]: run %d  %-15s %-16s %s\n' "$SECONDS" "$run" bulk-convert "$copier" "$summary" >&2
}

bulk_copy_case() {
  [[ -x /usr/bin/time ]] || die "/usr/bin/time is not installed (Debian package time)"
  say "bulk copy: convert of the 1 GiB 25%-allocated stack, $runs run(s)"
  local run copier
  for ((run = 1; run <= runs; run++)); do
    for copier in stackbd-convert qemu-img-convert nbdcopy-cow; do bulk_copy_one "$copier" "$run"; done
  done
}

# ---------------------------------------------------------------------------------------------
# Many exports (issue 13, item 5): scripts/bench/many-exports.sh appends its rows to the results.

many_exports_case() {
  local args=(--stackbd "$stackbd_js" --results "$results" --tmp "$tmp/many")
  if [[ $quick -eq 1 ]]; then args+=(--exports 100 --jobs 64 --runtime 10); fi
  say "many exports: scripts/bench/many-exports.sh ${args[*]}"
  # A failure here (a peer that stops answering 256 connections, say) leaves its rows out of the
  # report, which says so, instead of throwing away the half hour of rows measured before it.
  bash "$repo/scripts/bench/many-exports.sh" "${args[@]}" || { many_failed=1; say "scripts/bench/many-exports.sh failed; the rows it had not measured yet are left out"; }
}

[[ $skip_bulk -eq 1 ]] || bulk_copy_case
[[ $skip_many -eq 1 ]] || many_exports_case

# ---------------------------------------------------------------------------------------------
# Report

tool_version() { "$@" 2>&1 | head -n 1 || true; }
machine="$tmp/machine.json"
node -e '
  const [out, ...kv] = process.argv.slice(1);
  const o = {};
  for (let i = 0; i < kv.length; i += 2) o[kv[i]] = kv[i + 1];
  require("fs").writeFileSync(out, JSON.stringify(o, null, 2));
' "$machine" \
  nproc "$(nproc)" \
  cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
  memory "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" \
  kernel "$(uname -sr)" \
  os "$(awk -F= '$1 == "PRETTY_NAME" { gsub(/"/, "", $2); print $2 }' /etc/os-release 2>/dev/null || true)" \
  node "$(node --version)" \
  nbdkit "$(tool_version nbdkit --version)" \
  qemu "$(tool_version qemu-nbd --version)" \
  fio "$(tool_version fio --version)" \
  libnbd "$(nbdcopy --version 2>&1 | sed -n 2p)" \
  commit "$commit" \
  native "$native" \
  date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  load "at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg)" \
  duration "$((SECONDS / 60)) min $((SECONDS % 60)) s" \
  command "$command_line" \
  mode "$([[ $quick -eq 1 ]] && echo quick || echo full)" \
  runs "$runs" runtime "$runtime" ramp "$ramp" rssIo "$rss_io" imageSize "$size" \
  failed "$([[ $many_failed -eq 1 ]] && echo 'the many-exports rows not measured when scripts/bench/many-exports.sh failed (its messages are in the log of this run)')"

mkdir -p "$(dirname "$output")"
node "$repo/scripts/bench/report.mjs" "$results" "$machine" "$output"
say "wrote $output"
