#!/usr/bin/env bash
# Many exports, many connections (issue 13, item 5): one server process with N writable exports,
# each an overlay over ONE shared 25%-allocated 1 GiB RAW base, and J fio connections doing 4 KiB
# random reads and writes (50/50) at iodepth D. stackbd serves ASIF overlays from a config file;
# qemu-storage-daemon, the anchor, serves qcow2 overlays (extended_l2=on; --blockdev file+qcow2 per overlay, all
# backed by one raw node of the base, one --nbd-server, one --export type=nbd each).
#
#   bash scripts/bench/many-exports.sh [--exports N] [--jobs J] [--iodepth D] [--runtime S]
#        [--servers stackbd,qsd,stackbd-churn] [--runs R] [--stackbd PATH/bin/stackbd.js]
#        [--results FILE.jsonl] [--tmp DIR] [--keep-tmp]
#
# Defaults: N=500, J=256, D=4, S=30, R=1, all three servers, the checkout's bin/stackbd.js.
# Job j uses export floor(j*N/J): J distinct exports, one connection each, spread over all N
# (with J < N the others stay idle). fio runs with --thread (one process, J threads).
#
# Measured per run: start-up time (until the last export answers), VmRSS once idle (2 s after
# start-up), VmHWM at the end (the peak, start-up included), open fds idle and the most seen
# under load (/proc/PID/fd, sampled every second), server CPU during fio, IOPS (reads + writes)
# and the 99th percentile of completion latency of reads and of writes (fio, all jobs grouped).
# stackbd-churn: stackbd with --admin-socket, fio run twice: once quiet (before), once while a
# loop adds and removes exports through the admin API (POST/DELETE /exports, curl) on the side
# (during); reports both p99s and the add/remove operations done.
#
# Prints one line per run; with --results, appends JSON lines (kind=many) for bench/report.mjs.
# Everything runs on 127.0.0.1, on ports picked free; every server is stopped by its pid.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tool="$repo/scripts/bench/tool.mjs"
exports=500
jobs=256
iodepth=4
runtime=30
runs=1
servers_csv="stackbd,qsd,stackbd-churn"
stackbd_js="$repo/bin/stackbd.js"
results=""
tmp=""
keep_tmp=0

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; }
say() { printf 'many-exports [%4ds]: %s\n' "$SECONDS" "$*" >&2; }
die() { say "$*"; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --exports) exports=${2:?}; shift ;;
    --jobs) jobs=${2:?}; shift ;;
    --iodepth) iodepth=${2:?}; shift ;;
    --runtime) runtime=${2:?}; shift ;;
    --runs) runs=${2:?}; shift ;;
    --servers) servers_csv=${2:?}; shift ;;
    --stackbd) stackbd_js=${2:?}; shift ;;
    --results) results=${2:?}; shift ;;
    --tmp) tmp=${2:?}; shift ;;
    --keep-tmp) keep_tmp=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
for n in "$exports" "$jobs" "$iodepth" "$runtime" "$runs"; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "numbers must be positive: $n"; done
[[ $jobs -le $exports ]] || die "--jobs ($jobs) must not exceed --exports ($exports)"
IFS=, read -r -a servers <<<"$servers_csv"
for s in "${servers[@]}"; do [[ $s == stackbd || $s == qsd || $s == stackbd-churn ]] || die "unknown server $s (stackbd, qsd, stackbd-churn)"; done
bash "$repo/scripts/install-test-deps.sh" --if-missing --bench
for t in node fio nbdinfo qemu-img qemu-storage-daemon curl; do command -v "$t" >/dev/null || die "$t is not installed"; done
[[ -x $stackbd_js || -f $stackbd_js ]] || die "no stackbd at $stackbd_js"
stackbd_dist=$(cd "$(dirname "$stackbd_js")/../dist" && pwd) || die "no dist/ beside $stackbd_js (npm run build)"

if [[ -z $tmp ]]; then tmp=$(mktemp -d "${TMPDIR:-/tmp}/stackbd-many.XXXXXX"); own_tmp=1; else mkdir -p "$tmp"; own_tmp=0; fi
pids=()
clk_tck=$(getconf CLK_TCK)

proc_gone() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0; s=${s##*) }; [[ ${s%% *} == Z ]]; }
stop_pid() {
  local pid=$1 i status=0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 600; i++)); do proc_gone "$pid" && break; sleep 0.1; done
  proc_gone "$pid" || { say "pid $pid ignored SIGTERM for 60 s; killing it"; kill -KILL "$pid" 2>/dev/null || true; }
  wait "$pid" 2>/dev/null || status=$?
  local kept=() p
  for p in "${pids[@]}"; do [[ $p != "$pid" ]] && kept+=("$p"); done
  pids=("${kept[@]+"${kept[@]}"}")
  return "$status"
}
cleanup() {
  local status=$? p
  trap - EXIT INT TERM
  for p in "${pids[@]+"${pids[@]}"}"; do stop_pid "$p" || true; done
  if [[ $keep_tmp -eq 1 || $own_tmp -eq 0 ]]; then say "kept $tmp"; else rm -rf "$tmp"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

cpu_ticks() { local s f; s=$(cat "/proc/$1/stat"); read -r -a f <<<"${s##*) }"; echo $((f[11] + f[12])); }
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# ---------------------------------------------------------------------------------------------
# Layout: one base, N overlays of each kind (made fresh for every run)

base="$tmp/base.raw"
if [[ ! -f $base ]]; then
  say "base: 1 GiB, 64 KiB of data every 256 KiB"
  node "$tool" make-sparse "$base" 1G 64K 256K
fi
churn_pool=16 # overlays the churn loop cycles through (added, removed, added again...)

make_asif_overlays() {
  rm -rf "$tmp/asif" && mkdir -p "$tmp/asif"
  node "$repo/scripts/bench/make-overlays.mjs" "$stackbd_dist" "$base" "$tmp/asif" "$((exports + churn_pool))"
}
make_qcow2_overlays() {
  rm -rf "$tmp/qcow2" && mkdir -p "$tmp/qcow2"
  local i
  # extended_l2 (32 subclusters of 2 KiB): a 4 KiB write into a new 64 KiB cluster writes 4 KiB,
  # not the whole cluster copied up from the base. It is QEMU's advice for overlays, and without
  # it qemu-storage-daemon wrote ~90 GiB in one 30 s run and filled the disk (ENOSPC).
  for ((i = 0; i < exports; i++)); do qemu-img create -q -f qcow2 -o extended_l2=on -b "$base" -F raw "$tmp/qcow2/o$i.qcow2"; done
}

# ---------------------------------------------------------------------------------------------
# Servers

server_pid=""
port=""
admin_sock=""

start_stackbd() { # start_stackbd ADMIN(0|1)
  port=$(node "$tool" free-port)
  local cfg="$tmp/exports.json" i sep=""
  {
    printf '{ "syncInterval": 5, "exports": [\n'
    for ((i = 0; i < exports; i++)); do printf '%s  { "name": "e%d", "layers": ["raw:%s", "asif:%s/asif/o%d.asif"] }' "$sep" "$i" "$base" "$tmp" "$i"; sep=$',\n'; done
    printf '\n] }\n'
  } >"$cfg"
  local args=(serve --config "$cfg" --listen "127.0.0.1:$port" --log-level "${STACKBD_BENCH_LOG_LEVEL:-warn}")
  admin_sock=""
  if [[ $1 -eq 1 ]]; then admin_sock="$tmp/admin.sock"; rm -f "$admin_sock"; args+=(--admin-socket "$admin_sock"); fi
  "$stackbd_js" "${args[@]}" </dev/null >"$tmp/server.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
}

start_qsd() {
  port=$(node "$tool" free-port)
  local args=(--blockdev "driver=file,node-name=base-file,filename=$base,read-only=on"
    --blockdev "driver=raw,node-name=base,file=base-file,read-only=on") i
  for ((i = 0; i < exports; i++)); do
    args+=(--blockdev "driver=file,node-name=f$i,filename=$tmp/qcow2/o$i.qcow2"
      --blockdev "driver=qcow2,node-name=q$i,file=f$i,backing=base")
  done
  args+=(--nbd-server "addr.type=inet,addr.host=127.0.0.1,addr.port=$port")
  for ((i = 0; i < exports; i++)); do args+=(--export "type=nbd,id=x$i,node-name=q$i,name=e$i,writable=on"); done
  qemu-storage-daemon "${args[@]}" </dev/null >"$tmp/server.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
}

wait_ready() { # until the last export answers (and the admin socket is there); prints seconds
  local t0=$EPOCHREALTIME i
  for ((i = 0; i < 6000; i++)); do
    if proc_gone "$server_pid"; then tail -n 30 "$tmp/server.log" >&2; die "the server exited at start"; fi
    if nbdinfo --size "nbd://127.0.0.1:$port/e$((exports - 1))" >/dev/null 2>&1 && [[ -z $admin_sock || -S $admin_sock ]]; then
      awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
      return 0
    fi
    sleep 0.1
  done
  tail -n 30 "$tmp/server.log" >&2
  die "the server did not answer within 600 s"
}

# ---------------------------------------------------------------------------------------------
# Load

write_jobs() { # the fio job file: job j on export floor(j*N/J)
  local file="$tmp/jobs.fio" j
  {
    printf '[global]\nioengine=nbd\nrw=randrw\nrwmixread=50\nbs=4k\niodepth=%d\ntime_based=1\nruntime=%d\nthread=1\ngroup_reporting=1\nrandrepeat=0\n\n' "$iodepth" "$runtime"
    for ((j = 0; j < jobs; j++)); do printf '[j%d]\nuri=nbd://127.0.0.1:%d/e%d\n' "$j" "$port" "$((j * exports / jobs))"; done
  } >"$file"
  echo "$file"
}

# run_fio TAG: runs fio against server_pid, sampling fds and VmRSS each second; sets fio_json,
# max_fds, max_rss (KiB), cpu_s (server CPU seconds) and wall_s (fio's whole run, connecting
# included)
run_fio() {
  local tag=$1 jobfile c0 c1 fpid n t0
  jobfile=$(write_jobs)
  fio_json="$tmp/fio-$tag.json"
  c0=$(cpu_ticks "$server_pid")
  t0=$EPOCHREALTIME
  fio --output-format=json --output="$fio_json" "$jobfile" >"$tmp/fio-$tag.log" 2>&1 &
  fpid=$!
  max_fds=0
  max_rss=0
  while ! proc_gone "$fpid"; do
    n=$(fd_count "$server_pid")
    [[ $n -gt $max_fds ]] && max_fds=$n
    n=$(status_kib "$server_pid" VmRSS)
    [[ $n -gt $max_rss ]] && max_rss=$n
    sleep 1
  done
  wait "$fpid" || {
    tail -n 30 "$tmp/fio-$tag.log" >&2
    grep -v '"level":30' "$tmp/server.log" | tail -n 30 >&2
    die "fio failed ($tag)"
  }
  c1=$(cpu_ticks "$server_pid")
  cpu_s=$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN { printf "%.2f", (b - a) / t }')
  wall_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
}

# fio_summary FILE: "IOPS P99READMS P99WRITEMS ERRORS ELAPSED SPANIOPS". IOPS is fio's: I/Os over
# each job's own 30 s, which start when that job has connected. ELAPSED is fio's whole run and
# SPANIOPS the I/Os over it: a server that accepts connections slowly staggers the jobs (fewer
# run at once, each faster), which IOPS alone hides.
fio_summary() {
  node -e '
    const t = require("fs").readFileSync(process.argv[1], "utf8");
    const doc = JSON.parse(t.slice(t.indexOf("{")));
    const j = doc.jobs[0];
    const p99 = (side) => (side.clat_ns && side.clat_ns.percentile ? side.clat_ns.percentile["99.000000"] / 1e6 : NaN);
    const ios = j.read.total_ios + j.write.total_ios;
    console.log([(j.read.iops + j.write.iops).toFixed(0), p99(j.read).toFixed(2), p99(j.write).toFixed(2), j.error, j.elapsed, (ios / j.elapsed).toFixed(0)].join(" "));
  ' "$1"
}

# The churn loop: adds export cK (base + one of the spare overlays) and removes it again, over
# and over, until $tmp/churn.stop appears; counts the operations in $tmp/churn.count.
churn_loop() {
  local k=0 name body
  : >"$tmp/churn.count"
  while [[ ! -e $tmp/churn.stop ]]; do
    name="c$((k % churn_pool))"
    body=$(printf '{"name":"%s","layers":["raw:%s","asif:%s/asif/o%d.asif"]}' "$name" "$base" "$tmp" "$((exports + k % churn_pool))")
    curl -sf --unix-socket "$admin_sock" -X POST -H 'content-type: application/json' -d "$body" http://stackbd/exports >/dev/null || { echo "add $name failed" >>"$tmp/churn.errors"; }
    curl -sf --unix-socket "$admin_sock" -X DELETE "http://stackbd/exports/$name" >/dev/null || { echo "remove $name failed" >>"$tmp/churn.errors"; }
    echo x >>"$tmp/churn.count"
    k=$((k + 1))
  done
}

record() { # record KEY=VALUE...: a JSON line to --results, and a line on stderr
  local line
  line=$(node -e '
    const o = { kind: "many" };
    for (const kv of process.argv.slice(1)) { const i = kv.indexOf("="); const v = kv.slice(i + 1); o[kv.slice(0, i)] = v !== "" && !isNaN(Number(v)) ? Number(v) : v; }
    console.log(JSON.stringify(o));
  ' "$@")
  [[ -n $results ]] && echo "$line" >>"$results"
  say "$line"
}

measure() { # measure SERVER RUN
  local server=$1 run=$2 start idle_rss idle_fds hwm sum iops p99r p99w err elapsed span_iops
  case "$server" in
    stackbd) make_asif_overlays; start_stackbd 0 ;;
    stackbd-churn) make_asif_overlays; start_stackbd 1 ;;
    qsd) make_qcow2_overlays; start_qsd ;;
  esac
  start=$(wait_ready)
  sleep 2
  idle_rss=$(status_kib "$server_pid" VmRSS)
  idle_fds=$(fd_count "$server_pid")
  say "$server run $run: $exports exports answered after ${start}s; idle VmRSS $((idle_rss / 1024)) MiB, $idle_fds fds"
  local label=stackbd-$exports
  [[ $server == qsd ]] && label=qsd-$exports
  run_fio "$server-$run"
  read -r iops p99r p99w err elapsed span_iops <<<"$(fio_summary "$fio_json")"
  [[ $err == 0 ]] || die "fio reported error $err"
  hwm=$(status_kib "$server_pid" VmHWM)
  record server="$label" workload=many-exports run="$run" exports="$exports" jobs="$jobs" iodepth="$iodepth" \
    startSeconds="$start" idleRssKiB="$idle_rss" hwmKiB="$hwm" rssKiB="$(status_kib "$server_pid" VmRSS)" fdsIdle="$idle_fds" fdsLoad="$max_fds" rssLoadMaxKiB="$max_rss" \
    value="$iops" unit=IOPS p99ReadMs="$p99r" p99WriteMs="$p99w" fioElapsed="$elapsed" spanIops="$span_iops" wall="$wall_s" cpu="$cpu_s" admin=$([[ $server == stackbd-churn ]] && echo 1 || echo 0)
  if [[ $server == stackbd-churn ]]; then
    rm -f "$tmp/churn.stop" "$tmp/churn.errors"
    churn_loop &
    local churn_pid=$!
    # Stopped by cleanup too, should fio fail: a loop left running after its server had gone
    # kept calling the dead admin socket.
    pids+=("$churn_pid")
    run_fio "$server-$run-churn"
    touch "$tmp/churn.stop"
    stop_pid "$churn_pid" || true
    read -r iops p99r p99w err elapsed span_iops <<<"$(fio_summary "$fio_json")"
    [[ $err == 0 ]] || die "fio reported error $err during the churn"
    [[ ! -s $tmp/churn.errors ]] || { head "$tmp/churn.errors" >&2; die "admin add/remove failed during the churn"; }
    record server="$label" workload=many-exports-churn run="$run" exports="$exports" jobs="$jobs" iodepth="$iodepth" \
      hwmKiB="$(status_kib "$server_pid" VmHWM)" rssKiB="$(status_kib "$server_pid" VmRSS)" fdsLoad="$max_fds" rssLoadMaxKiB="$max_rss" \
      value="$iops" unit=IOPS p99ReadMs="$p99r" p99WriteMs="$p99w" fioElapsed="$elapsed" spanIops="$span_iops" wall="$wall_s" cpu="$cpu_s" churnOps="$(wc -l <"$tmp/churn.count")"
  fi
  stop_pid "$server_pid" || { tail -n 30 "$tmp/server.log" >&2; die "$server exited with an error"; }
  say "$server run $run: overlays hold $(du -sm "$tmp/asif" "$tmp/qcow2" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }') MiB; removed"
  rm -rf "$tmp/asif" "$tmp/qcow2"
}

say "$exports exports, $jobs fio jobs (4 KiB randrw 50/50, iodepth $iodepth, ${runtime}s), servers: ${servers[*]}"
for ((run = 1; run <= runs; run++)); do
  for s in "${servers[@]}"; do measure "$s" "$run"; done
done
