#!/bin/sh
# /init of the stackbd Linux guest test (scripts/e2e-guest.sh builds it into an initramfs).
#
# Runs as PID 1 under busybox sh. The kernel command line says which disk to test:
#   stackbd.mode=qemu                  the disk is QEMU's virtio-blk /dev/vda (QEMU's NBD client)
#   stackbd.mode=kernel                the guest kernel's nbd module and Debian's nbd-client,
#   stackbd.host=IP stackbd.port=N     reaching the server through QEMU's guestfwd rule
#   stackbd.export=NAME
# It makes an ext4 filesystem, writes files, syncs, records checksums (also into the
# filesystem, /SHA256SUMS, for the host to verify on the flattened image), runs fstrim,
# remounts with cold caches, verifies, runs e2fsck -fn, and prints one marker line:
#   @@stackbd-e2e@@ PASS mode=...      or      @@stackbd-e2e@@ FAIL mode=... <why>
# then powers off. Debian's tools are called by full path under /deb (busybox's own mke2fs
# cannot make ext4).

# shellcheck disable=SC2317 # the functions below run through step

export PATH=/bin
MARK='@@stackbd-e2e@@'
MODE=unknown
HOST=10.0.2.100
PORT=10809
EXPORT=disk
MNT=/mnt
DEB=/deb/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp
mount -t tmpfs tmpfs /tmp

# shellcheck disable=SC2013 # the command line is one line of words
for word in $(cat /proc/cmdline); do
  case "$word" in
    stackbd.mode=*) MODE=${word#*=} ;;
    stackbd.host=*) HOST=${word#*=} ;;
    stackbd.port=*) PORT=${word#*=} ;;
    stackbd.export=*) EXPORT=${word#*=} ;;
  esac
done

uptime_s() { cut -d' ' -f1 /proc/uptime; }

finish() {
  # $1: PASS or FAIL, the rest: why
  result=$1
  shift
  echo
  echo "$MARK $result mode=$MODE uptime=$(uptime_s)s $*"
  sync
  poweroff -f
  sleep 5
  exit 1 # the kernel panics (panic=-1 reboots, -no-reboot makes QEMU exit)
}

fail() {
  echo "$MARK step failed: $*"
  echo "--- last kernel messages:"
  dmesg | tail -n 40
  [ -s /tmp/step.log ] && { echo "--- output of the failed step:"; tail -n 40 /tmp/step.log; }
  finish FAIL "$*"
}

# step DESCRIPTION COMMAND...: runs COMMAND (output to the console and /tmp/step.log), fails
# the test if it fails, and prints how long it took.
step() {
  desc=$1
  shift
  t0=$(uptime_s)
  "$@" >/tmp/step.log 2>&1
  rc=$?
  cat /tmp/step.log
  [ "$rc" -eq 0 ] || fail "$desc (exit $rc)"
  t1=$(uptime_s)
  echo "$MARK step ok: $desc ($(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")s)"
}

echo "$MARK guest init started: mode=$MODE uptime=$(uptime_s)s kernel=$(uname -r)"

load_modules() {
  while read -r ko; do
    [ -n "$ko" ] || continue
    name=${ko##*/}
    name=${name%.ko*}
    grep -q "^$name " /proc/modules && continue
    insmod "/lib/modules/$ko" || { echo "insmod $ko failed"; return 1; }
  done </lib/modules/load.list
}
step "load kernel modules" load_modules

wait_for_block() {
  # $1: block device name under /sys/block; waits until it exists with a non-zero size
  i=0
  while [ "$i" -lt 100 ]; do
    if [ -e "/dev/$1" ] && [ -r "/sys/block/$1/size" ] && [ "$(cat "/sys/block/$1/size")" != 0 ]; then
      echo "/dev/$1: $(cat "/sys/block/$1/size") sectors, discard max $(cat "/sys/block/$1/queue/discard_max_bytes") bytes"
      return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
  echo "/dev/$1 did not appear"
  return 1
}

net_up() {
  ip link set lo up &&
    ip link set eth0 up &&
    ip addr add 10.0.2.15/24 dev eth0 &&
    ip addr show eth0
}

nbd_connect() {
  # -N: the export name (newstyle negotiation); the kernel keeps the socket (netlink).
  timeout 60 "$DEB"/nbd-client "$HOST" "$PORT" /dev/nbd0 -N "$EXPORT" -b 4096
}

case "$MODE" in
  qemu)
    DEV=/dev/vda
    step "wait for $DEV" wait_for_block vda
    ;;
  kernel)
    DEV=/dev/nbd0
    step "configure eth0" net_up
    step "nbd-client $HOST $PORT /dev/nbd0 -N $EXPORT" nbd_connect
    step "wait for $DEV" wait_for_block nbd0
    ;;
  *)
    fail "unknown stackbd.mode=$MODE"
    ;;
esac

# Files: 4 MiB of deterministic pseudo-random data (built on the host), 64 small files, a
# sparse file with 1 MiB of data at 64 MiB, and an 8 MiB scratch file that is deleted before
# fstrim so that fstrim has freed blocks to discard.
write_files() {
  cp /payload.bin "$MNT"/random.bin || return 1
  mkdir -p "$MNT"/small/deeper || return 1
  i=1
  while [ "$i" -le 64 ]; do
    yes "small file $i of the stackbd guest test" | head -c $((i * 173)) >"$MNT"/small/f"$i".txt || return 1
    i=$((i + 1))
  done
  echo "stackbd $MODE" >"$MNT"/small/deeper/mode.txt
  dd if=/payload.bin of="$MNT"/sparse.bin bs=65536 count=16 seek=1024 2>/dev/null || return 1
  cat /payload.bin /payload.bin >"$MNT"/scratch.bin || return 1
  sync
  rm "$MNT"/scratch.bin
  (cd "$MNT" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum) >/tmp/SHA256SUMS || return 1
  cp /tmp/SHA256SUMS "$MNT"/SHA256SUMS
}

cold_caches() {
  blockdev --flushbufs "$DEV"
  echo 3 >/proc/sys/vm/drop_caches
}

verify_files() {
  cmp /tmp/SHA256SUMS "$MNT"/SHA256SUMS || return 1
  (cd "$MNT" && sha256sum -c SHA256SUMS) || return 1
  cmp /payload.bin "$MNT"/random.bin || return 1
  [ ! -e "$MNT"/scratch.bin ] || { echo "scratch.bin came back"; return 1; }
  echo "$(wc -l </tmp/SHA256SUMS) files verified"
}

mkdir -p "$MNT"
step "mkfs.ext4 $DEV" $DEB/mkfs.ext4 -F -q -L stackbd-e2e "$DEV"
step "mount" mount -t ext4 "$DEV" "$MNT"
step "write files" write_files
step "sync" sync
step "fstrim" $DEB/fstrim -v "$MNT"
step "unmount" umount "$MNT"
step "drop caches" cold_caches
step "remount" mount -t ext4 "$DEV" "$MNT"
step "verify files" verify_files
step "df" df -k "$MNT"
step "final unmount" umount "$MNT"
step "drop caches" cold_caches
step "e2fsck -fn $DEV" $DEB/e2fsck -fn "$DEV"
if [ "$MODE" = kernel ]; then
  step "nbd-client -d /dev/nbd0" $DEB/nbd-client -d /dev/nbd0
fi
finish PASS "all steps passed"
