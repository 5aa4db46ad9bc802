#!/usr/bin/env bash
# kill -9 cycles of stackbd serve (issue 6, item 2): writes and flushes through an NBD client,
# SIGKILL at a random moment, `stackbd check` of the overlay, restart, and every write
# acknowledged before the last completed FLUSH (or FUA) verified.
#
#   bash scripts/kill-cycles.sh [--cycles N] [--seed N] [--no-build]
#
# Default 100 cycles. It runs test/reliability/kill9.test.ts (which `npm test` runs with 10)
# with STACKBD_KILL_CYCLES. Every server is started on a port of 127.0.0.1 it picks itself and
# killed by its pid.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cycles=100
seed=""
build=1
usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cycles) cycles=${2:?--cycles needs a number}; shift ;;
    --seed) seed=${2:?--seed needs a number}; shift ;;
    --no-build) build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "kill-cycles.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ "$cycles" =~ ^[0-9]+$ && "$cycles" -ge 1 ]] || { echo "kill-cycles.sh: --cycles must be a whole number, 1 or more" >&2; exit 2; }
cd "$repo"
if [[ $build -eq 1 ]]; then npm run build --silent; fi
export STACKBD_KILL_CYCLES="$cycles"
if [[ -n "$seed" ]]; then export STACKBD_KILL_SEED="$seed"; fi
npx vitest run test/reliability/kill9.test.ts
