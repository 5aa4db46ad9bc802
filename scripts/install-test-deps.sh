#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as real NBD clients and reference servers.
# `npm test` runs it with --if-missing: it does nothing when every tool is already there.
set -euo pipefail

packages=(qemu-utils libnbd-bin python3-libnbd nbdkit fio)
tools=(qemu-img qemu-io qemu-nbd nbdinfo nbdsh nbdcopy nbdkit fio)

missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# nbdsh is `python3 -m nbd`: it needs Debian's python3 with the libnbd bindings.
if ! /usr/bin/python3 -c 'import nbd' >/dev/null 2>&1; then missing+=(python3-libnbd); fi

if [[ "${1:-}" == "--if-missing" && ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "install-test-deps: installing ${packages[*]} (missing: ${missing[*]:-none})" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "install-test-deps: run as root: apt-get update && apt-get install -y ${packages[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
