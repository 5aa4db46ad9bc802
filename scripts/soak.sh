#!/usr/bin/env bash
# Soak test of stackbd serve (issue 6, item 5): 64 connections over 4 exports (two RAW files, a
# RAW + ASIF overlay stack, a RAW + ASIF cache + ASIF overlay stack) for a long time, every read
# checked against a model, connections dropped and reopened at random, the server's RSS sampled.
#
#   bash scripts/soak.sh [--seconds N] [--seed N] [--report FILE] [--no-build]
#
# Default 600 seconds. It runs test/reliability/soak.test.ts (which `npm test` runs for 60 s)
# with STACKBD_SOAK_SECONDS, and writes the figures as JSON to --report (default
# $TMPDIR/stackbd-soak-report.json). The server is started on a port of 127.0.0.1 it picks
# itself and stopped by its pid.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=600
seed=""
report="${TMPDIR:-/tmp}/stackbd-soak-report.json"
build=1
usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift ;;
    --seed) seed=${2:?--seed needs a number}; shift ;;
    --report) report=${2:?--report needs a file}; shift ;;
    --no-build) build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "soak.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 10 ]] || { echo "soak.sh: --seconds must be a whole number, 10 or more" >&2; exit 2; }
[[ "$report" = /* ]] || report="$PWD/$report"
cd "$repo"
if [[ $build -eq 1 ]]; then npm run build --silent; fi
export STACKBD_SOAK_SECONDS="$seconds" STACKBD_SOAK_REPORT="$report"
if [[ -n "$seed" ]]; then export STACKBD_SOAK_SEED="$seed"; fi
npx vitest run test/reliability/soak.test.ts
echo "soak.sh: figures in $report"
