#!/usr/bin/env bash
# Remote bases: how fast a stack on an http:// base reads, cold and warm, against the same base
# as a local file and against nbdkit's curl plugin with its cache filter. Not a test.
#
#   bash scripts/bench/remote.sh [--size 1G] [--runtime 10] [--delay 5] [--hosts 4]
#                                [--no-fio] [--no-nbdkit] [--no-build] [--keep-tmp]
#
# The base is SIZE bytes, 25% allocated (1 MiB of random data at the start of every 4 MiB),
# served by nginx (its own config in a temp dir) behind scripts/bench/latency-proxy.mjs, which
# adds DELAY ms each way. For each case: nbdcopy of the whole export to null:, and fio 4 KiB
# random reads at QD32 for RUNTIME seconds, with requests and bytes counted in nginx's access
# log and the server's CPU seconds (user + system) from /proc. Cases:
#   stackbd-cold   URL <- fresh ASIF cache <- overlay (empty cache before each measurement)
#   stackbd-warm   the same stack after an nbdcopy filled the cache
#   stackbd-local  the same base as a local RAW file <- overlay
#   nbdkit-cold / nbdkit-warm   nbdkit --filter=cache curl (cache-on-read) on the same URL
#   hosts-N        N `stackbd serve` processes on N ports, each with its own fresh cache and
#                  overlay, all read by nbdcopy at once (as N hosts on one origin would): each
#                  host's time, the origin's bytes against N times one cold host's, failures
# The summary ends with the goals of issue 11: cold <= 1.5x local, warm within 5% of local,
# origin requests <= 1.1x the fewest that carry the bytes read (requests of the largest
# size, 4 MiB, for a copy).
# Every server runs on a free port of 127.0.0.1 and is stopped by its pid.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tool="$repo/scripts/bench/tool.mjs"
stackbd=(node "$repo/bin/stackbd.js")
size=1G
runtime=10
delay=5
hosts=4
fio=1
nbdkit=1
build=1
keep_tmp=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) size=$2; shift ;;
    --runtime) runtime=$2; shift ;;
    --delay) delay=$2; shift ;;
    --hosts) hosts=$2; shift ;;
    --no-fio) fio=0 ;;
    --no-nbdkit) nbdkit=0 ;;
    --no-build) build=0 ;;
    --keep-tmp) keep_tmp=1 ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
say() { printf 'remote-bench [%4ds]: %s\n' "$SECONDS" "$*" >&2; }
bash "$repo/scripts/install-test-deps.sh" --if-missing --bench
needed=(nginx nbdcopy node)
[[ $fio -eq 1 ]] && needed+=(fio)
[[ $nbdkit -eq 1 ]] && needed+=(nbdkit)
for t in "${needed[@]}"; do command -v "$t" >/dev/null || { say "$t is missing"; exit 1; }; done
[[ $build -eq 1 ]] && (cd "$repo" && npm run build --silent)
size_bytes=$(numfmt --from=iec "$size")
max_request=$((4 * 1024 * 1024))
workloads=(nbdcopy)
[[ $fio -eq 1 ]] && workloads+=(fio)

tmp=$(mktemp -d /tmp/stackbd-remote-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ $keep_tmp -eq 1 ]] && say "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; say "nothing on port $1"; return 1; }
# CPU seconds (user + system) a process has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }

mkdir -p "$tmp/www" "$tmp/nginx/tmp"
node "$tool" make-sparse "$tmp/www/base.raw" "$size" 1M 4M
cp --sparse=always "$tmp/www/base.raw" "$tmp/local.raw"

nginx_port=$(node "$tool" free-port)
user_line=""; [[ $(id -u) -eq 0 ]] && user_line="user root;"
cat > "$tmp/nginx/nginx.conf" <<CONF
$user_line
daemon off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
  log_format t escape=none '\$request_method \$status \$bytes_sent';
  access_log $tmp/nginx/access.log t;
  client_body_temp_path $tmp/nginx/tmp/body; proxy_temp_path $tmp/nginx/tmp/proxy;
  fastcgi_temp_path $tmp/nginx/tmp/fastcgi; uwsgi_temp_path $tmp/nginx/tmp/uwsgi; scgi_temp_path $tmp/nginx/tmp/scgi;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$nginx_port; root $tmp/www; }
}
CONF
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" &
pids+=($!)
wait_port "$nginx_port"
node "$repo/scripts/bench/latency-proxy.mjs" "$nginx_port" "$delay" > "$tmp/proxy.port" &
pids+=($!)
for _ in $(seq 1 100); do [[ -s $tmp/proxy.port ]] && break; sleep 0.05; done
url="http://127.0.0.1:$(cat "$tmp/proxy.port")/base.raw"
say "base $size (25% allocated) at $url, ${delay} ms added each way"

log_mark() { wc -l < "$tmp/nginx/access.log" 2>/dev/null || echo 0; }
origin_since() { # origin_since MARK: "requests bytes" of the GETs logged after MARK lines (HEADs and 1-byte probes left out)
  tail -n +"$(( $1 + 1 ))" "$tmp/nginx/access.log" | awk '$1 == "GET" && $3 > 1000 { n++; b += $3 } END { printf "%d %.0f", n, b }'
}

server_pid=""
server_port=""
start_stackbd() { # start_stackbd LAYERS...: serves export "vm" (sets server_pid, server_port)
  server_port=$(node "$tool" free-port)
  local spec; spec=$(IFS=,; echo "$*")
  "${stackbd[@]}" serve --listen "127.0.0.1:$server_port" --export "vm=$spec" --log-level warn 2>>"$tmp/stackbd.log" &
  server_pid=$!
  wait_port "$server_port"
}
start_nbdkit() { # start_nbdkit CACHE_DIR
  server_port=$(node "$tool" free-port)
  env "TMPDIR=$1" nbdkit -f --exit-with-parent -i 127.0.0.1 -p "$server_port" -e vm --filter=cache curl "url=$url" cache-on-read=true 2>>"$tmp/nbdkit.log" &
  server_pid=$!
  wait_port "$server_port"
}
stop_server() { stop_pid "$server_pid"; server_pid=""; }

results=()
declare -A seconds=() origin_bytes=() origin_requests=()
measure() { # measure CASE WHAT: runs nbdcopy or fio against the running server, records a line
  local case=$1 what=$2 mark start end out cpu0 cpu1
  mark=$(log_mark)
  cpu0=$(cpu_of "$server_pid")
  start=$(date +%s.%N)
  if [[ $what == nbdcopy ]]; then
    nbdcopy "nbd://127.0.0.1:$server_port/vm" null:
    end=$(date +%s.%N)
    seconds[$case-$what]=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
    out=$(awk -v t="${seconds[$case-$what]}" -v b="$size_bytes" 'BEGIN { printf "%.2f s, %.1f MiB/s", t, b / 1048576 / t }')
  else
    fio --name=rr --ioengine=nbd --uri="nbd://127.0.0.1:$server_port/vm" --rw=randread --bs=4k --iodepth=32 \
      --time_based --runtime="$runtime" --output-format=json --output="$tmp/fio.json" >/dev/null
    out=$(node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).jobs[0].read; console.log(`${Math.round(j.iops)} IOPS, ${(j.bw_bytes/1048576).toFixed(1)} MiB/s, p99 ${(j.clat_ns.percentile["99.000000"]/1e6).toFixed(2)} ms`)' "$tmp/fio.json")
  fi
  cpu1=$(cpu_of "$server_pid")
  local origin; origin=$(origin_since "$mark")
  origin_requests[$case-$what]=${origin% *}
  origin_bytes[$case-$what]=${origin#* }
  local line; line=$(printf '%-14s %-8s %-44s server cpu %6.2f s   origin: %s requests, %s bytes' "$case" "$what" "$out" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" ${origin})
  say "$line"
  results+=("$line")
}

fresh_stack() { # fresh_stack NAME: a new empty cache and overlay on the URL, $tmp/NAME-cache.asif and $tmp/NAME-overlay.asif
  rm -f "$tmp/$1-cache.asif" "$tmp/$1-overlay.asif"
  "${stackbd[@]}" append "$url" --new "$tmp/$1-cache.asif" --type cache >/dev/null
  "${stackbd[@]}" append "$url" "$tmp/$1-cache.asif" --new "$tmp/$1-overlay.asif" >/dev/null
}

# stackbd, cold then warm, for each workload.
for what in "${workloads[@]}"; do
  fresh_stack one
  start_stackbd "$url" "$tmp/one-cache.asif" "$tmp/one-overlay.asif"
  measure stackbd-cold "$what"
  stop_server
  if [[ $what == fio ]]; then
    # Warm for fio: fill the cache with a whole read first.
    start_stackbd "$url" "$tmp/one-cache.asif" "$tmp/one-overlay.asif"
    nbdcopy "nbd://127.0.0.1:$server_port/vm" null:
    stop_server
  fi
  start_stackbd "$url" "$tmp/one-cache.asif" "$tmp/one-overlay.asif"
  measure stackbd-warm "$what"
  stop_server
done
rm -f "$tmp/overlay.asif"
"${stackbd[@]}" append "$tmp/local.raw" --new "$tmp/overlay.asif" >/dev/null
for what in "${workloads[@]}"; do
  start_stackbd "$tmp/local.raw" "$tmp/overlay.asif"
  measure stackbd-local "$what"
  stop_server
done
# nbdkit curl + cache filter: the cache lives while nbdkit runs (its file is deleted at exit),
# so cold and warm are one run each, the warm one right after a whole read.
if [[ $nbdkit -eq 1 ]]; then
  for what in "${workloads[@]}"; do
    mkdir -p "$tmp/nbdkit-cache"
    start_nbdkit "$tmp/nbdkit-cache"
    measure nbdkit-cold "$what"
    [[ $what == fio ]] && nbdcopy "nbd://127.0.0.1:$server_port/vm" null:
    measure nbdkit-warm "$what"
    stop_server
  done
fi

# N hosts on one origin: N servers, each its own cache, all copied at once.
hosts_lines=()
if [[ $hosts -gt 0 ]]; then
  host_pids=() host_ports=()
  for h in $(seq 1 "$hosts"); do
    fresh_stack "host$h"
    start_stackbd "$url" "$tmp/host$h-cache.asif" "$tmp/host$h-overlay.asif"
    host_pids+=("$server_pid"); host_ports+=("$server_port"); pids+=("$server_pid")
  done
  host_cpu0=()
  for p in "${host_pids[@]}"; do host_cpu0+=("$(cpu_of "$p")"); done
  mark=$(log_mark)
  copy_pids=()
  for h in $(seq 1 "$hosts"); do
    ( s=$(date +%s.%N); rc=0; nbdcopy "nbd://127.0.0.1:${host_ports[$((h - 1))]}/vm" null: 2>"$tmp/host$h.err" || rc=$?
      e=$(date +%s.%N); awk -v s="$s" -v e="$e" -v rc="$rc" 'BEGIN { printf "%.2f %d\n", e - s, rc }' > "$tmp/host$h.result" ) &
    copy_pids+=($!)
  done
  for p in "${copy_pids[@]}"; do wait "$p"; done
  origin=$(origin_since "$mark")
  failures=0
  for h in $(seq 1 "$hosts"); do
    read -r t rc < "$tmp/host$h.result"
    [[ $rc -eq 0 ]] || failures=$((failures + 1))
    cpu=$(awk -v a="${host_cpu0[$((h - 1))]}" -v b="$(cpu_of "${host_pids[$((h - 1))]}")" 'BEGIN { print b - a }')
    line=$(printf '%-14s %-8s %.2f s, %.1f MiB/s, exit %d, server cpu %.2f s' "host $h/$hosts" nbdcopy "$t" "$(awk -v t="$t" -v b="$size_bytes" 'BEGIN { print b / 1048576 / t }')" "$rc" "$cpu")
    say "$line"; hosts_lines+=("$line")
  done
  for p in "${host_pids[@]}"; do stop_pid "$p"; done
  one=${origin_bytes[stackbd-cold-nbdcopy]}
  line=$(printf '%-14s %-8s origin: %s requests, %s bytes = %.2fx one cold host (%s bytes); %d of %d copies failed' "hosts-$hosts" nbdcopy ${origin} "$(awk -v b="${origin#* }" -v o="$one" 'BEGIN { print b / o }')" "$one" "$failures" "$hosts")
  say "$line"; hosts_lines+=("$line")
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
fewest=$(( (${origin_bytes[stackbd-cold-nbdcopy]} + max_request - 1) / max_request ))
printf '\n%s\n' "remote bench: base $size 25% allocated, ${delay} ms each way, fio 4k randread QD32 ${runtime}s"
printf '%s\n' "${results[@]}" "${hosts_lines[@]}"
printf '\n%s\n' "goals (issue 11):"
printf '  cold nbdcopy / local:   %s (goal <= 1.5)\n' "$(ratio "${seconds[stackbd-cold-nbdcopy]}" "${seconds[stackbd-local-nbdcopy]}")"
printf '  warm nbdcopy / local:   %s (goal <= 1.05)\n' "$(ratio "${seconds[stackbd-warm-nbdcopy]}" "${seconds[stackbd-local-nbdcopy]}")"
printf '  cold nbdcopy requests:  %s for %s bytes, %s of 4 MiB would carry them: %s (goal <= 1.1)\n' "${origin_requests[stackbd-cold-nbdcopy]}" "${origin_bytes[stackbd-cold-nbdcopy]}" "$fewest" "$(ratio "${origin_requests[stackbd-cold-nbdcopy]}" "$fewest")"
[[ $nbdkit -eq 1 ]] && printf '  nbdkit cold nbdcopy / stackbd cold: %s\n' "$(ratio "${seconds[nbdkit-cold-nbdcopy]}" "${seconds[stackbd-cold-nbdcopy]}")"
exit 0
