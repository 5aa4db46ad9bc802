#!/usr/bin/env bash
# Remote bases: how fast a stack on an http:// base reads, cold and warm, against the same base
# as a local file and against nbdkit's curl plugin with its cache filter. Not a test.
#
#   bash scripts/bench/remote.sh [--size 1G] [--runtime 10] [--delay 5] [--no-build] [--keep-tmp]
#
# The base is SIZE bytes, 25% allocated (1 MiB of random data at the start of every 4 MiB),
# served by nginx (its own config in a temp dir) behind scripts/bench/latency-proxy.mjs, which
# adds DELAY ms each way. For each case: nbdcopy of the whole export to null:, and fio 4 KiB
# random reads at QD32 for RUNTIME seconds, with requests and bytes counted in nginx's access
# log. Cases:
#   stackbd-cold   URL <- fresh ASIF cache <- overlay (empty cache before each measurement)
#   stackbd-warm   the same stack after an nbdcopy filled the cache
#   stackbd-local  the same base as a local RAW file <- overlay
#   nbdkit-cold / nbdkit-warm   nbdkit --filter=cache curl (cache-on-read) on the same URL
# Every server runs on a free port of 127.0.0.1 and is stopped by its pid.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tool="$repo/scripts/bench/tool.mjs"
stackbd=(node "$repo/bin/stackbd.js")
size=1G
runtime=10
delay=5
build=1
keep_tmp=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) size=$2; shift ;;
    --runtime) runtime=$2; shift ;;
    --delay) delay=$2; shift ;;
    --no-build) build=0 ;;
    --keep-tmp) keep_tmp=1 ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
say() { printf 'remote-bench [%4ds]: %s\n' "$SECONDS" "$*" >&2; }
for t in nginx nbdkit nbdcopy fio node; do command -v "$t" >/dev/null || { say "$t is missing"; exit 1; }; done
[[ $build -eq 1 ]] && (cd "$repo" && npm run build --silent)

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
origin_since() { # origin_since MARK: "requests bytes" logged after MARK lines
  tail -n +"$(( $1 + 1 ))" "$tmp/nginx/access.log" | awk '{ n++; b += $3 } END { printf "%d %d", n, b }'
}

server_pid=""
server_port=""
start_stackbd() { # start_stackbd LAYERS...: serves export "vm"
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
measure() { # measure CASE WHAT: runs nbdcopy or fio against the running server, records a line
  local case=$1 what=$2 mark start end out
  mark=$(log_mark)
  start=$(date +%s.%N)
  if [[ $what == nbdcopy ]]; then
    nbdcopy "nbd://127.0.0.1:$server_port/vm" null:
    end=$(date +%s.%N)
    out=$(awk -v s="$start" -v e="$end" -v b="$(numfmt --from=iec "$size")" 'BEGIN { printf "%.2f s, %.1f MiB/s", e - s, b / 1048576 / (e - s) }')
  else
    fio --name=rr --ioengine=nbd --uri="nbd://127.0.0.1:$server_port/vm" --rw=randread --bs=4k --iodepth=32 \
      --time_based --runtime="$runtime" --output-format=json --output="$tmp/fio.json" >/dev/null
    out=$(node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).jobs[0].read; console.log(`${Math.round(j.iops)} IOPS, ${(j.bw_bytes/1048576).toFixed(1)} MiB/s, p99 ${(j.clat_ns.percentile["99.000000"]/1e6).toFixed(2)} ms`)' "$tmp/fio.json")
  fi
  local origin; origin=$(origin_since "$mark")
  local line; line=$(printf '%-14s %-8s %-48s origin: %s requests, %s bytes' "$case" "$what" "$out" ${origin})
  say "$line"
  results+=("$line")
}

fresh_stack() { # a new empty cache and overlay on the URL
  rm -f "$tmp/cache.asif" "$tmp/overlay.asif"
  "${stackbd[@]}" append "$url" --new "$tmp/cache.asif" --type cache >/dev/null
  "${stackbd[@]}" append "$url" "$tmp/cache.asif" --new "$tmp/overlay.asif" >/dev/null
}

# stackbd, cold then warm, for each workload.
for what in nbdcopy fio; do
  fresh_stack
  start_stackbd "$url" "$tmp/cache.asif" "$tmp/overlay.asif"
  measure stackbd-cold "$what"
  stop_server
  if [[ $what == fio ]]; then
    # Warm for fio: fill the cache with a whole read first.
    start_stackbd "$url" "$tmp/cache.asif" "$tmp/overlay.asif"
    nbdcopy "nbd://127.0.0.1:$server_port/vm" null:
    stop_server
  fi
  start_stackbd "$url" "$tmp/cache.asif" "$tmp/overlay.asif"
  measure stackbd-warm "$what"
  stop_server
done
rm -f "$tmp/overlay.asif"
"${stackbd[@]}" append "$tmp/local.raw" --new "$tmp/overlay.asif" >/dev/null
for what in nbdcopy fio; do
  start_stackbd "$tmp/local.raw" "$tmp/overlay.asif"
  measure stackbd-local "$what"
  stop_server
done
# nbdkit curl + cache filter: the cache lives while nbdkit runs (its file is deleted at exit),
# so cold and warm are one run each, the warm one right after a whole read.
for what in nbdcopy fio; do
  mkdir -p "$tmp/nbdkit-cache"
  start_nbdkit "$tmp/nbdkit-cache"
  measure nbdkit-cold "$what"
  [[ $what == fio ]] && nbdcopy "nbd://127.0.0.1:$server_port/vm" null:
  measure nbdkit-warm "$what"
  stop_server
done

printf '\n%s\n' "remote bench: base $size 25% allocated, ${delay} ms each way, fio 4k randread QD32 ${runtime}s" 
printf '%s\n' "${results[@]}"
