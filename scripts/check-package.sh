#!/usr/bin/env bash
# Checks that `npm pack` makes a package a user can install and run, twice:
#   1. with a C toolchain: the install builds the native addon, and the server loads it;
#   2. without one (PATH without make and the C/C++ compilers): the install still succeeds, and
#      the server logs once that it runs without the native fast paths.
# Each time: `npm install -g` of the tarball into an empty prefix, `stackbd serve --demo` on a
# port the server picks in an empty directory, `nbdinfo --list` against it, then SIGTERM to its
# pid and exit 0. Needs nbdinfo (Debian package libnbd-bin) and network access to the registry
# (the dependencies are installed from it, as a user's would be).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nbdinfo >/dev/null || { echo "check-package: nbdinfo is missing: apt-get install -y libnbd-bin" >&2; exit 1; }

tmp=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "check-package: $*" >&2
  exit 1
}

echo "== npm pack"
npm pack --pack-destination "$tmp" --silent >"$tmp/pack-name"
tarball="$tmp/$(tail -n 1 "$tmp/pack-name")"
[ -f "$tarball" ] || fail "npm pack made no tarball ($(cat "$tmp/pack-name"))"
tar tzf "$tarball" | sed 's|^package/||' | sort >"$tmp/contents"
for wanted in package.json LICENSE README.md bin/stackbd.js dist/cli/main.js dist/index.js dist/index.d.ts \
  native/binding.gyp native/build.mjs native/src/stackbd_native.c; do
  grep -qx "$wanted" "$tmp/contents" || fail "the package lacks $wanted"
done
if grep -E '^(src|test|scripts|node_modules|native/build)/' "$tmp/contents"; then fail "the package holds the files above, which it should not"; fi
echo "$(basename "$tarball"): $(wc -l <"$tmp/contents") files, $(du -k "$tarball" | cut -f1) KiB"

# A PATH that has everything the current one has except make and the C and C++ compilers.
nocc="$tmp/path-without-toolchain"
mkdir -p "$nocc"
IFS=: read -ra path_dirs <<<"$PATH"
for d in "${path_dirs[@]}"; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do
    name=${f##*/}
    case "$name" in
      make | gmake | cc | c++ | gcc | g++ | gcc-* | g++-* | *-gcc | *-g++ | *-gcc-* | *-g++-* | clang | clang++ | clang-* | cpp | cpp-*) continue ;;
    esac
    [ -x "$f" ] && [ ! -e "$nocc/$name" ] && ln -s "$f" "$nocc/$name"
  done
done

# install_and_serve LABEL PATH EXPECT(native|portable)
install_and_serve() {
  local label=$1 search_path=$2 expect=$3
  local prefix="$tmp/prefix-$label" run="$tmp/run-$label"
  mkdir -p "$prefix" "$run"
  echo "== npm install -g --prefix $prefix ($label)"
  PATH="$search_path" npm install -g --prefix "$prefix" --foreground-scripts --no-audit --no-fund "$tarball" >"$tmp/install-$label.log" 2>&1 ||
    fail "npm install -g failed ($label):
$(cat "$tmp/install-$label.log")"
  grep -E '^stackbd: |^added ' "$tmp/install-$label.log" || true
  [ -x "$prefix/bin/stackbd" ] || fail "no $prefix/bin/stackbd after the install ($label)"

  echo "== stackbd serve --demo ($label)"
  (cd "$run" && exec "$prefix/bin/stackbd" serve --demo --listen 127.0.0.1:0 --log-level info 2>"$run/serve.log" >/dev/null) &
  server_pid=$!
  local port=
  for _ in $(seq 1 300); do
    port=$(grep '"msg":"listening"' "$run/serve.log" | sed -n 's/.*"tcp":{"host":"[^"]*","port":\([0-9]*\)}.*/\1/p' | head -n 1 || true)
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "stackbd serve exited before listening ($label):
$(cat "$run/serve.log")"
    sleep 0.1
  done
  [ -n "$port" ] || fail "stackbd serve did not listen within 30 s ($label):
$(cat "$run/serve.log")"
  nbdinfo --list "nbd://127.0.0.1:$port" >"$run/list.txt" || fail "nbdinfo --list failed ($label)"
  grep -q 'export="demo"' "$run/list.txt" || fail "nbdinfo --list does not show the demo export ($label):
$(cat "$run/list.txt")"
  echo "nbdinfo --list nbd://127.0.0.1:$port: $(grep -c '^export=' "$run/list.txt") export(s): $(grep '^export=' "$run/list.txt" | tr '\n' ' ')"
  kill -TERM "$server_pid"
  local code=0
  wait "$server_pid" || code=$?
  server_pid=
  [ "$code" -eq 0 ] || fail "stackbd serve exited with $code after SIGTERM ($label)"
  echo "stopped by SIGTERM to pid, exit 0"

  local notices
  notices=$(grep -c 'native fast paths not loaded' "$run/serve.log" || true)
  if [ "$expect" = native ]; then
    [ -f "$prefix/lib/node_modules/stackbd/native/build/Release/stackbd_native.node" ] || fail "the install did not build the native addon ($label)"
    [ "$notices" -eq 0 ] || fail "the server did not load the native addon ($label): $(grep 'native fast paths' "$run/serve.log")"
    echo "native addon built and loaded"
  else
    [ ! -e "$prefix/lib/node_modules/stackbd/native/build/Release/stackbd_native.node" ] || fail "an addon was built without a toolchain ($label)"
    [ "$notices" -eq 1 ] || fail "the server logged the missing addon $notices times, not once ($label)"
    echo "no native addon; the server said: $(grep -o '"msg":"native fast paths not loaded[^"]*"' "$run/serve.log" | cut -c8-200)..."
  fi
}

install_and_serve with-toolchain "$PATH" native
install_and_serve without-toolchain "$nocc" portable
echo "== check-package: ok"
