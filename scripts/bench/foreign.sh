# Foreign bases in scripts/bench.sh (issue 12), sourced by it: reading a 1 GiB UDZO DMG through
# a stack against 7-Zip extracting the same file, and a qcow2 base against `qemu-nbd -r` on the
# same qcow2. Its servers and workloads join bench.sh's lists and pair only with each other:
#
#   dmg-read       servers stackbd-dmg (`stackbd serve --export bench=disk.dmg,overlay.asif`,
#                  a fresh empty overlay per run) read whole by `nbdcopy nbd://… null:`, and
#                  7zz-x (`7zz x -tdmg -so disk.dmg > /dev/null`: no server; the client is all)
#   qcow2-rand-read-qd32, qcow2-seq-read
#                  servers stackbd-qcow2 (`--export bench=base.qcow2,overlay.asif`) and
#                  qemu-nbd-r-qcow2 (`qemu-nbd -r -t -e 64 -f qcow2 base.qcow2`); fio 4 KiB random
#                  reads at iodepth 32 and sequential 1 MiB reads at iodepth 8, as bench.sh's
#                  rand-read-qd32 and seq-read
#
# The images are made once, only when one of these workloads is selected: disk.dmg is `stackbd
# convert` of a 1 GiB disk whose every fourth MiB is random and the rest compressible text
# (what an installer or a golden disk holds; 7zz and the stack must both give its bytes:
# checked by sha256 once, before the runs); base.qcow2 is `qemu-img convert -O qcow2` of
# bench.sh's base.raw (all random data: every read finds an allocated cluster).
#
# Uses from bench.sh: $tmp, $stackbd_js, $runtime, $ramp, $results, fio_args, run_tool,
# start_server, stop_server, cpu_ticks, status_kib, snap_children, children_secs, now, elapsed,
# cpu_seconds, say, die, stackbd.

foreign_servers=(stackbd-dmg 7zz-x stackbd-qcow2 qemu-nbd-r-qcow2)
foreign_dmg_bytes=$((1024 * 1024 * 1024))
foreign_dmg_sha256=
foreign_workloads=(dmg-read qcow2-rand-read-qd32 qcow2-seq-read)

# foreign_applies SERVER WORKLOAD: 0 when the pair is measured, 1 when not, 2 when neither is foreign
foreign_applies() {
  local s=$1 w=$2 fs=0 fw=0 x
  for x in "${foreign_servers[@]}"; do [[ $s == "$x" ]] && fs=1; done
  for x in "${foreign_workloads[@]}"; do [[ $w == "$x" ]] && fw=1; done
  [[ $fs -eq 0 && $fw -eq 0 ]] && return 2
  case "$w:$s" in
    dmg-read:stackbd-dmg | dmg-read:7zz-x) return 0 ;;
    qcow2-*:stackbd-qcow2 | qcow2-*:qemu-nbd-r-qcow2) return 0 ;;
  esac
  return 1
}

# foreign_fio_args WORKLOAD: the fio options (as bench.sh's fio_args of the same shape)
foreign_fio_args() {
  case "$1" in
    qcow2-rand-read-qd32) fio_args rand-read-qd32 ;;
    qcow2-seq-read) fio_args seq-read ;;
    *) return 1 ;;
  esac
}

# foreign_prepare WORKLOADS...: makes the images the selected foreign workloads need
foreign_prepare() {
  local w need_dmg=0 need_qcow2=0
  for w in "$@"; do
    [[ $w == dmg-read ]] && need_dmg=1
    [[ $w == qcow2-* ]] && need_qcow2=1
  done
  if [[ $need_qcow2 -eq 1 ]]; then
    command -v qemu-img >/dev/null || die "qemu-img is not installed"
    say "making base.qcow2 from base.raw"
    run_tool qemu-img-convert-qcow2 qemu-img convert -q -f raw -O qcow2 "$tmp/base.raw" "$tmp/base.qcow2"
    cat "$tmp/base.qcow2" >/dev/null
  fi
  if [[ $need_dmg -eq 1 ]]; then
    command -v 7zz >/dev/null || die "7zz is not installed (apt-get install 7zip)"
    say "making disk.dmg: a 1 GiB disk (25% random, 75% compressible text) as UDZO"
    local text="$tmp/text.bin" i
    (yes 'stackbd dmg benchmark: a line of compressible text, sector after sector, 0123456789' || true) | head -c $((3 * 1024 * 1024)) >"$text"
    for ((i = 0; i < foreign_dmg_bytes / (4 * 1024 * 1024); i++)); do
      head -c $((1024 * 1024)) /dev/urandom
      cat "$text"
    done >"$tmp/dmg-disk.raw"
    local want got
    want=$(sha256sum <"$tmp/dmg-disk.raw" | cut -d' ' -f1)
    run_tool stackbd-convert-dmg stackbd convert "$tmp/dmg-disk.raw" -O "$tmp/disk.dmg"
    rm -f "$tmp/dmg-disk.raw" "$text"
    got=$(7zz x -tdmg -so "$tmp/disk.dmg" | sha256sum | cut -d' ' -f1)
    [[ $got == "$want" ]] || die "7zz extracts other bytes from disk.dmg than the disk it was made from"
    foreign_dmg_sha256=$want
    cat "$tmp/disk.dmg" >/dev/null
  fi
}

# foreign_server_cmd SERVER PORT: sets cmd (the server's command line); 1 for 7zz-x (no server)
foreign_server_cmd() {
  local server=$1 port=$2 base
  case "$server" in
    stackbd-dmg | stackbd-qcow2)
      [[ $server == stackbd-dmg ]] && base="$tmp/disk.dmg" || base="$tmp/base.qcow2"
      rm -f "$tmp/overlay.asif"
      run_tool stackbd-append stackbd append "$base" --new "$tmp/overlay.asif" --type overlay
      cmd=("$stackbd_js" serve --listen "127.0.0.1:$port" --export "bench=$base,$tmp/overlay.asif" --log-level warn) ;;
    qemu-nbd-r-qcow2)
      cmd=(qemu-nbd -r -t -e 64 -f qcow2 -b 127.0.0.1 -p "$port" -x bench "$tmp/base.qcow2") ;;
    7zz-x) return 1 ;;
    *) die "unknown server $server" ;;
  esac
}

# foreign_run WORKLOAD SERVER TAG: runs the client of the workload against $server_uri (or 7zz
# on the file); sets extra (the record's key=value pairs)
foreign_run() {
  local workload=$1 server=$2 tag=$3 dmg_bytes
  case "$workload" in
    dmg-read)
      dmg_bytes=$(stat -c %s "$tmp/disk.dmg")
      if [[ $server == 7zz-x ]]; then
        run_tool "7zz-$tag" sh -c '7zz x -tdmg -so "$1" >/dev/null' 7zz "$tmp/disk.dmg"
      else
        run_tool "nbdcopy-$tag" nbdcopy "$server_uri" null:
      fi
      extra=(kind=copy "bytes=$foreign_dmg_bytes" "note=disk.dmg $dmg_bytes bytes") ;;
    qcow2-*)
      local fio_out="$tmp/fio-$tag.json"
      # shellcheck disable=SC2046
      run_tool "fio-$tag" fio --name="$workload" --ioengine=nbd --uri="$server_uri" \
        $(foreign_fio_args "$workload") --time_based --runtime="$runtime" --ramp_time="$ramp" \
        --output-format=json --output="$fio_out"
      extra=(kind=fio "fio=$fio_out") ;;
    *) die "unknown foreign workload $workload" ;;
  esac
}

# foreign_run_one SERVER WORKLOAD RUN: one measured run, recorded as bench.sh's run_one does
# (7zz-x has no server: its CPU is the client's, and it has no server RSS)
foreign_run_one() {
  local server=$1 workload=$2 run=$3 tag="$1-$2-$3" pid="" c0=0 c1=0 hwm="" rss="" cpu="" t0 t1 extra=() summary got
  if [[ $server != 7zz-x ]]; then
    start_server "$server" full "$tag"
    pid=$server_pid
    c0=$(cpu_ticks "$pid")
  fi
  snap_children "$tmp/times0"
  t0=$(now)
  foreign_run "$workload" "$server" "$tag"
  t1=$(now)
  snap_children "$tmp/times1"
  if [[ -n $pid ]]; then
    c1=$(cpu_ticks "$pid")
    hwm=$(status_kib "$pid" VmHWM)
    rss=$(status_kib "$pid" VmRSS)
    cpu=$(cpu_seconds "$c0" "$c1")
    if [[ $server == stackbd-dmg && $run -eq 1 ]]; then
      # Once, after the measured copy: the stack serves the disk's bytes (as 7zz extracts them).
      got=$(nbdcopy "$server_uri" - | sha256sum | cut -d' ' -f1)
      [[ $got == "$foreign_dmg_sha256" ]] || die "stackbd serves other bytes from disk.dmg than the disk it was made from"
    fi
    stop_server
  fi
  summary=$(node "$tool" record "$results" "server=$server" "workload=$workload" "run=$run" \
    "wall=$(elapsed "$t0" "$t1")" "cpu=$cpu" "hwm=$hwm" "rss=$rss" \
    "client=$(elapsed "$(children_secs "$tmp/times0")" "$(children_secs "$tmp/times1")")" "${extra[@]}")
  printf 'bench [%4ds]: run %d  %-15s %-16s %s\n' "$SECONDS" "$run" "$workload" "$server" "$summary" >&2
}
