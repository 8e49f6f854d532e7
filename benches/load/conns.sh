#!/usr/bin/env bash
# Connection costs of sendgate beside nginx, in one run: resident memory per
# idle keep-alive client connection, per in-flight send waiting on a slow
# upstream, and how a burst of new connections is accepted and answered.
# Both proxies forward to the same slow Python upstream (conns.py), all on
# 127.0.0.1. See README.md beside this file. Usage: bash benches/load/conns.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# ---- knobs (environment variables) -----------------------------------------
IDLE=${IDLE:-5000}                  # N: idle keep-alive connections
INFLIGHT=${INFLIGHT:-3000}          # M: concurrent sends waiting on the upstream
BURST=${BURST:-3000}                # B: new connections opened at once
INFLIGHT_DELAY=${INFLIGHT_DELAY:-3} # upstream delay (s) in the in-flight scenario
BURST_DELAY=${BURST_DELAY:-1}       # upstream delay (s) in the burst scenario
SETTLE=${SETTLE:-2}                 # seconds idle connections settle before RSS is read
OPEN_CONCURRENCY=${OPEN_CONCURRENCY:-100} # idle/in-flight connections opened at a time
WARMUP_SENDS=${WARMUP_SENDS:-4}     # sends before each scenario's baseline
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-60}    # per connect (s)
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-150} # per scenario (s)
BASE_PORT=${BASE_PORT:-19300}       # upstreams (delay 0, burst, in-flight), nginx, sendgate: BASE_PORT..BASE_PORT+4
SKIP_BUILD=${SKIP_BUILD:-0}         # 1: use target/release/sendgate as it is
KEEP_TMP=${KEEP_TMP:-0}             # 1: keep the temp dir (configs, logs, raw results)
OUT=${OUT:-$HERE/conns-latest.md}

BENCH=conns
source "$HERE/lib.sh"
int_in IDLE "$IDLE" 1 15000
int_in INFLIGHT "$INFLIGHT" 1 15000
int_in BURST "$BURST" 1 15000
int_in INFLIGHT_DELAY "$INFLIGHT_DELAY" 1 30
int_in BURST_DELAY "$BURST_DELAY" 0 30
int_in SETTLE "$SETTLE" 0 60
int_in OPEN_CONCURRENCY "$OPEN_CONCURRENCY" 1 10000
int_in WARMUP_SENDS "$WARMUP_SENDS" 1 100
int_in CONNECT_TIMEOUT "$CONNECT_TIMEOUT" 1 300
int_in SCENARIO_TIMEOUT "$SCENARIO_TIMEOUT" 10 600
int_in BASE_PORT "$BASE_PORT" 1024 65000

U_IDLE=$BASE_PORT             # upstream answering at once
U_BURST=$((BASE_PORT + 1))    # upstream answering after BURST_DELAY
U_INFLIGHT=$((BASE_PORT + 2)) # upstream answering after INFLIGHT_DELAY
NPORT=$((BASE_PORT + 3))
SPORT=$((BASE_PORT + 4))
START_TIME=$(date +%s)

# Every side holds one descriptor per connection (the proxy two).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
MAXN=$IDLE
((INFLIGHT > MAXN)) && MAXN=$INFLIGHT
((BURST > MAXN)) && MAXN=$BURST
[[ $NOFILE == unlimited ]] || ((NOFILE >= 2 * MAXN + 200)) ||
    die "open files limit $NOFILE is too low for $MAXN connections (need $((2 * MAXN + 200)))"
# nginx's worker asks for 65536 descriptors; where it may not raise its hard
# limit (no CAP_SYS_RESOURCE, as in a container) setrlimit would fail with an
# alert, so it asks for the hard limit instead.
NGINX_NOFILE=65536
[[ $NOFILE == unlimited ]] || ((NOFILE >= NGINX_NOFILE)) || NGINX_NOFILE=$NOFILE

# ---- tools and build --------------------------------------------------------
need_tools nginx
command -v python3 >/dev/null || die "python3 not found"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 3.11 or newer needed"
if [[ $SKIP_BUILD != 1 ]]; then
    command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain first (or SKIP_BUILD=1)"
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
fi
[[ -x $ROOT/target/release/sendgate ]] || die "no $ROOT/target/release/sendgate"

TMP=$(mktemp -d /tmp/sendgate-conns.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$TMP/results" "$TMP/nginx"
# A private copy, so that a rebuild during the run does not swap the binary.
cp "$ROOT/target/release/sendgate" "$TMP/sendgate"
GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null) ]]; then GIT_REV="$GIT_REV+dirty"; fi

# ---- process bookkeeping: everything started is stopped on exit ------------
descendants() { # pid -> all its descendants' pids, from /proc
    local f s ppid child
    for f in /proc/[0-9]*/stat; do
        { read -r s <"$f"; } 2>/dev/null || continue
        s=${s##*) }
        read -r _ ppid _ <<<"$s"
        if [[ $ppid == "$1" ]]; then
            child=${f#/proc/}
            child=${child%/stat}
            echo "$child"
            descendants "$child"
        fi
    done
}
stop_tree() { # pid: TERM it, at most 5 s to exit, then KILL it and what it started
    local pid=$1 kids i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kids=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL "$pid" $kids 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
PIDS=()     # long-lived: the upstream
PROXY_PID=""
CLIENT_PID=""
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    [[ -n $CLIENT_PID ]] && stop_tree "$CLIENT_PID"
    [[ -n $PROXY_PID ]] && stop_tree "$PROXY_PID"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_tree "${PIDS[i]}"; done
    if [[ $KEEP_TMP == 1 || $rc != 0 ]]; then
        log "temp dir kept: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for port in $U_IDLE $U_BURST $U_INFLIGHT $NPORT $SPORT; do
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
        die "port $port is in use (set BASE_PORT)"
    fi
done

wait_port() { # name port pid: bounded wait (10 s) until the port accepts
    local i
    for i in $(seq 1 100); do
        kill -0 "$3" 2>/dev/null || die "$1 exited at start (see $TMP)"
        if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$1 did not listen on 127.0.0.1:$2 within 10 s"
}

# ---- the slow upstream ----------------------------------------------------------
python3 "$HERE/conns.py" upstream --ports "$U_IDLE,$U_BURST,$U_INFLIGHT" \
    --delays "0,$BURST_DELAY,$INFLIGHT_DELAY" </dev/null >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
for port in $U_IDLE $U_BURST $U_INFLIGHT; do wait_port upstream "$port" "${PIDS[0]}"; done

# ---- proxies ------------------------------------------------------------------------
nginx_conf() { # upstream port -> nginx.conf
    cat <<CONF
# Reference proxy for conns.sh: one worker, keep-alive pool to the upstream.
worker_processes 1;
worker_rlimit_nofile $NGINX_NOFILE;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream upstream {
        server 127.0.0.1:$1;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NPORT;
        location / {
            proxy_pass http://upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
}
sendgate_conf() { # upstream port -> sendgate.toml
    cat <<CONF
listen = "127.0.0.1:$SPORT"
upstream = "http://127.0.0.1:$1"
request_timeout_ms = 60000
[store]
path = ""
[admin]
listen = ""
[log]
level = "warn"
[limits.number]
mode = "off"
[limits.pair]
mode = "off"
CONF
}

PROXY_PORT=""
start_proxy() { # proxy scenario upstream-port
    local proxy=$1 s=$2 uport=$3
    if [[ $proxy == nginx ]]; then
        nginx_conf "$uport" >"$TMP/nginx/nginx-$s.conf"
        nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx-$s.conf" </dev/null \
            >>"$TMP/nginx/stdout.log" 2>&1 &
        PROXY_PORT=$NPORT
    else
        sendgate_conf "$uport" >"$TMP/sendgate-$s.toml"
        "$TMP/sendgate" serve --config "$TMP/sendgate-$s.toml" </dev/null >"$TMP/sendgate-$s.log" 2>&1 &
        PROXY_PORT=$SPORT
    fi
    PROXY_PID=$!
    wait_port "$proxy" "$PROXY_PORT" "$PROXY_PID"
}

FAILED=0
run_scenario() { # proxy scenario
    local proxy=$1 s=$2 uport n rc=0
    case $s in
    idle) uport=$U_IDLE n=$IDLE ;;
    inflight) uport=$U_INFLIGHT n=$INFLIGHT ;;
    burst) uport=$U_BURST n=$BURST ;;
    esac
    log "$proxy $s: n=$n"
    start_proxy "$proxy" "$s" "$uport"
    # In the background and waited for, so that a signal stops the script (and
    # the trap kills the client) at once.
    timeout -k 5 $((SCENARIO_TIMEOUT + 30)) python3 "$HERE/conns.py" "$s" --port "$PROXY_PORT" --pid "$PROXY_PID" \
        --n "$n" --out "$TMP/results/$proxy-$s.json" --warmup "$WARMUP_SENDS" \
        --open-concurrency "$OPEN_CONCURRENCY" --settle "$SETTLE" --connect-timeout "$CONNECT_TIMEOUT" \
        --io-timeout $((INFLIGHT_DELAY + BURST_DELAY + 60)) --scenario-timeout "$SCENARIO_TIMEOUT" \
        </dev/null 2>>"$TMP/client.log" &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || rc=$?
    CLIENT_PID=""
    if ((rc != 0)); then
        FAILED=1
        printf '%s\t%s\t%s\n' "$proxy" "$s" "client exited with $rc: $(tail -n 1 "$TMP/client.log")" >>"$TMP/results/failures.txt"
        log "$proxy $s FAILED (exit $rc): $(tail -n 1 "$TMP/client.log")"
        rm -f "$TMP/results/$proxy-$s.json"
    else
        tail -n 1 "$TMP/client.log" >&2
    fi
    if ! kill -0 "$PROXY_PID" 2>/dev/null; then
        FAILED=1
        printf '%s\t%s\t%s\n' "$proxy" "$s" "the proxy exited during the scenario" >>"$TMP/results/failures.txt"
        log "$proxy exited during $s"
    fi
    stop_tree "$PROXY_PID"
    PROXY_PID=""
}

log "about 40 s: a direct burst, then nginx, then sendgate, each proxy restarted for idle, inflight and burst"
BENCH_START=$(date +%s)
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

# The harness floor: the same burst straight to the upstream, no proxy, so
# that what the Python client and upstream add themselves can be told apart.
log "direct burst (no proxy): n=$BURST"
timeout -k 5 $((SCENARIO_TIMEOUT + 30)) python3 "$HERE/conns.py" burst --port "$U_BURST" --pid "${PIDS[0]}" \
    --n "$BURST" --out "$TMP/results/direct-burst.json" --warmup "$WARMUP_SENDS" \
    --connect-timeout "$CONNECT_TIMEOUT" --io-timeout $((BURST_DELAY + 60)) --scenario-timeout "$SCENARIO_TIMEOUT" \
    </dev/null 2>>"$TMP/client.log" &
CLIENT_PID=$!
if wait "$CLIENT_PID"; then tail -n 1 "$TMP/client.log" >&2; else log "direct burst failed: $(tail -n 1 "$TMP/client.log")"; fi
CLIENT_PID=""
for proxy in nginx sendgate; do
    for s in idle inflight burst; do
        run_scenario "$proxy" "$s"
    done
done
BENCH_END=$(date +%s)
kill -0 "${PIDS[0]}" 2>/dev/null || die "the upstream died during the run (see $TMP/upstream.log)"

# What the proxies logged (sendgate at warn, nginx's error log at warn).
log_summary() { # files... -> "N lines, first: ..." or nothing
    local lines first
    lines=$(cat "$@" 2>/dev/null | grep -c . || true)
    ((lines > 0)) || return 0
    first=$(cat "$@" 2>/dev/null | grep -m1 . | cut -c1-240)
    echo "$lines lines (kept in the temp dir), first: $first"
}
NGINX_LOG=$(log_summary "$TMP/nginx/error.log" "$TMP/nginx/stdout.log")
SENDGATE_LOG=""
for s in idle inflight burst; do
    sum=$(log_summary "$TMP/sendgate-$s.log")
    [[ -n $sum ]] && SENDGATE_LOG="$SENDGATE_LOG${SENDGATE_LOG:+; }$s: $sum"
done
if [[ -n $NGINX_LOG || -n $SENDGATE_LOG ]]; then KEEP_TMP=1; fi
((FAILED == 0)) || KEEP_TMP=1

# ---- report ----------------------------------------------------------------------
{
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    echo "kernel=$(uname -srm)"
    echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "python=$(python3 --version 2>&1)"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "git=$GIT_REV"
    echo "idle_n=$IDLE"
    echo "inflight_n=$INFLIGHT"
    echo "burst_n=$BURST"
    echo "idle_delay=0"
    echo "inflight_delay=$INFLIGHT_DELAY"
    echo "burst_delay=$BURST_DELAY"
    echo "settle=$SETTLE"
    echo "open_concurrency=$OPEN_CONCURRENCY"
    echo "warmup=$WARMUP_SENDS"
    echo "nofile=$NOFILE"
    echo "nginx_nofile=$NGINX_NOFILE"
    echo "somaxconn=$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo unknown)"
    echo "seconds=$((BENCH_END - BENCH_START))"
    echo "loadavg_start=$LOADAVG_START"
    echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "nginx_log=$NGINX_LOG"
    echo "sendgate_log=$SENDGATE_LOG"
} >"$TMP/meta.env"
python3 "$HERE/conns.py" report --dir "$TMP/results" --meta "$TMP/meta.env" --out "$OUT"
log "wrote $OUT; total $(($(date +%s) - START_TIME)) s"
((FAILED == 0)) || die "a scenario failed (see above and $TMP)"
