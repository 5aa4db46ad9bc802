#!/usr/bin/env bash
# Installs the Debian packages the test suite drives: real NBD clients and reference servers,
# the oracles of the foreign formats, and the origins of remote bases. `npm test` runs it with
# --if-missing: it does nothing when every tool is already there. scripts/bench.sh adds --bench:
# the anchors and meters only the benchmark uses (qemu-storage-daemon, GNU time, curl).
set -euo pipefail

if_missing=0
bench=0
for arg in "$@"; do
  case "$arg" in
    --if-missing) if_missing=1 ;;
    --bench) bench=1 ;;
    *) echo "install-test-deps: unknown option $arg (use --if-missing, --bench)" >&2; exit 2 ;;
  esac
done

packages=(
  qemu-utils libnbd-bin python3-libnbd nbdkit fio     # NBD clients, reference servers, load
  7zip dmg2img xz-utils bzip2                          # DMG oracles (7zz, dmg2img), xz and bzip2 streams
  nginx-light openssl                                  # http(s) origin, test certificates
  swift swift-proxy swift-object swift-container swift-account   # S3 API origin (s3api middleware)
  systemd                                              # systemd-notify, systemd-analyze (unit tests)
)
tools=(qemu-img qemu-io qemu-nbd nbdinfo nbdsh nbdcopy nbdkit fio 7zz dmg2img xz bzip2 nginx openssl
  swift-proxy-server swift-object-server swift-container-server swift-account-server systemd-notify systemd-analyze)
if [[ $bench -eq 1 ]]; then
  packages+=(qemu-system-common time curl)     # qemu-storage-daemon (many exports), /usr/bin/time, curl
  tools+=(qemu-storage-daemon /usr/bin/time curl)
fi

missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# nbdsh is `python3 -m nbd`: it needs Debian's python3 with the libnbd bindings; the S3 tests
# build Swift's rings with its Python modules.
if ! /usr/bin/python3 -c 'import nbd' >/dev/null 2>&1; then missing+=(python3-libnbd); fi
if ! /usr/bin/python3 -c 'import swift.common.ring' >/dev/null 2>&1; then missing+=(python3-swift); fi

if [[ $if_missing -eq 1 && ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "install-test-deps: installing ${packages[*]} (missing: ${missing[*]:-none})" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "install-test-deps: run as root: apt-get update && apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
