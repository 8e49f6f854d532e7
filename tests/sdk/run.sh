#!/usr/bin/env bash
# SDK compatibility test: real, unmodified WhatsApp Cloud API SDKs (pywa for
# Python, @kapso/whatsapp-cloud-api for Node) sending through sendgate in
# front of its sandbox.
#
# Usage: bash tests/sdk/run.sh [path/to/sendgate]   (default target/release/sendgate)
#
# Installs the pinned SDKs into a temporary directory (PyPI, npm; node, npm
# and python3-venv from apt if missing), starts `sendgate serve --sandbox` on
# a free loopback port, runs pywa_check.py then kapso_check.mjs (order
# matters: one server, shared state) and ends with `N passed, M failed`.
# Exits non-zero if any check failed. Only loopback traffic besides installs.
set -euo pipefail

PYWA_VERSION=4.5.0
KAPSO_VERSION=0.3.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

BIN="${1:-target/release/sendgate}"
if [[ "$BIN" != /* && ! -e "$BIN" && -e "$REPO/$BIN" ]]; then
  BIN="$REPO/$BIN"
fi
if [[ ! -x "$BIN" ]]; then
  echo "sendgate binary not found or not executable: $BIN (build it: cargo build --release)" >&2
  exit 2
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sendgate-sdk.XXXXXX")"
SERVER_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    # Bounded wait for it to go, then force.
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

APT_UPDATED=0
apt_install() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    echo "== apt-get update"
    timeout 600 apt-get update -qq
    APT_UPDATED=1
  fi
  echo "== apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "$@" >/dev/null
}

# --- toolchains -------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
if ! timeout 120 python3 -m venv "$WORK/venv" >/dev/null 2>&1; then
  rm -rf "$WORK/venv"
  apt_install python3-venv
  timeout 120 python3 -m venv "$WORK/venv"
fi

# --- pinned SDKs --------------------------------------------------------------
echo "== pip install pywa==$PYWA_VERSION"
timeout 600 "$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check "pywa==$PYWA_VERSION"
echo "== npm install @kapso/whatsapp-cloud-api@$KAPSO_VERSION"
mkdir -p "$WORK/node"
timeout 600 npm install --silent --no-audit --no-fund --prefix "$WORK/node" \
  "@kapso/whatsapp-cloud-api@$KAPSO_VERSION" >/dev/null
# An ES module resolves packages from its own directory upwards, so the Node
# check runs from beside the node_modules it needs.
cp "$HERE/kapso_check.mjs" "$WORK/node/kapso_check.mjs"

# --- sendgate -----------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
# The admin API is where the Node check gives sendgate a pair, as an operator would.
export SDK_ADMIN="http://127.0.0.1:$ADMIN_PORT"
export SDK_ADMIN_TOKEN="sdk-check"
echo "== sendgate serve --sandbox --listen 127.0.0.1:$PORT ($BIN)"
RUST_LOG=warn SENDGATE_STORE__PATH="$WORK/identities.redb" SENDGATE_ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT" \
  SENDGATE_ADMIN_TOKEN="$SDK_ADMIN_TOKEN" "$BIN" serve --sandbox --listen "127.0.0.1:$PORT" >"$WORK/sendgate.log" 2>&1 &
SERVER_PID=$!

ready=0
deadline=$((SECONDS + 20))
while ((SECONDS < deadline)); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    break
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
if [[ $ready -ne 1 ]]; then
  echo "sendgate did not start listening on 127.0.0.1:$PORT within 20 s; its log:" >&2
  cat "$WORK/sendgate.log" >&2 || true
  exit 1
fi

# --- checks -------------------------------------------------------------------
total_passed=0
total_failed=0
status=0

# Runs one check script (bounded), echoes its output and adds its counts.
run_checks() {
  local label="$1"
  shift
  local out="$WORK/$label.out" rc=0
  echo "== $label"
  timeout 180 "$@" >"$out" 2>&1 || rc=$?
  cat "$out"
  local line passed failed
  line="$(grep -E "^$label: [0-9]+ passed, [0-9]+ failed$" "$out" | tail -n 1 || true)"
  if [[ -n "$line" ]]; then
    passed="$(sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed$/\1/' <<<"$line")"
    failed="$(sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed$/\2/' <<<"$line")"
  else
    passed=0
    failed=0
  fi
  # A script that died or exited non-zero without reporting a failure still fails.
  if [[ $rc -ne 0 && $failed -eq 0 ]]; then
    echo "FAIL $label: exited with status $rc"
    failed=1
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  if [[ $rc -ne 0 ]]; then
    status=1
  fi
}

# pywa first: its BSUID template refusal needs sendgate not to know the
# BSUID's phone yet, which kapso's check (e) then gives it.
run_checks pywa "$WORK/venv/bin/python" "$HERE/pywa_check.py" "$BASE"
run_checks kapso node "$WORK/node/kapso_check.mjs" "$BASE"

if [[ $status -ne 0 || $total_failed -ne 0 ]]; then
  echo "== sendgate log"
  cat "$WORK/sendgate.log" || true
fi
echo "$total_passed passed, $total_failed failed"
if [[ $status -ne 0 || $total_failed -ne 0 ]]; then
  exit 1
fi
