#!/usr/bin/env bash
# A local fleet in one command: Redis (append-only, fsync always) and three
# sendgate replicas on loopback, sharing identities and limits, in front of
# one simulated Cloud API. Ctrl-C stops everything.
#
#   bash deploy/fleet-local.sh            # replicas on 127.0.0.1:8081-8083
#   SENDGATE=target/release/sendgate UPSTREAM=https://graph.facebook.com bash deploy/fleet-local.sh
#
# Admin APIs on 127.0.0.1:9101-9103 (token: $SENDGATE_ADMIN_TOKEN, default
# "local"), Redis on 127.0.0.1:${REDIS_PORT:-6390}, state in a temporary
# directory removed at exit. Needs redis-server (apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6390}
SANDBOX_PORT=${SANDBOX_PORT:-9080}
export SENDGATE_ADMIN_TOKEN=${SENDGATE_ADMIN_TOKEN:-local}
if [ -z "${SENDGATE:-}" ]; then
    cargo build --release --quiet
    SENDGATE=target/release/sendgate
fi
command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install -y redis-server)" >&2; exit 1; }

state=$(mktemp -d)
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$state"
}
trap stop EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$state" --save "" \
    --appendonly yes --appendfsync always >"$state/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done

if [ -z "${UPSTREAM:-}" ]; then
    "$SENDGATE" sandbox --listen "127.0.0.1:$SANDBOX_PORT" &
    pids+=($!)
    UPSTREAM="http://127.0.0.1:$SANDBOX_PORT"
fi

export SENDGATE_FLEET__REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export SENDGATE_FLEET__EXPECTED_REPLICAS=3
export SENDGATE_STORE__PATH=""
for i in 1 2 3; do
    SENDGATE_ADMIN__LISTEN="127.0.0.1:910$i" \
        "$SENDGATE" serve --listen "127.0.0.1:808$i" --upstream "$UPSTREAM" &
    pids+=($!)
done

echo "fleet: replicas on 127.0.0.1:8081-8083 (admin 9101-9103), redis on $REDIS_PORT, upstream $UPSTREAM"
echo "Ctrl-C to stop."
wait -n
echo "a process of the fleet exited; stopping the rest" >&2
