#!/usr/bin/env bash
# User-space instructions per request, nginx against sendgate, counted by
# valgrind's callgrind. Unlike CPU time under load, sendgate's count barely
# moves between runs (about 10 instructions in 34,000; nginx's up to 1%), so
# it shows changes of 1% that the load benchmark's noise (several %) hides. It counts
# work, not time: cache misses, system calls and the kernel are not in it.
#
# Each proxy runs under callgrind twice per scenario, for N1 and N2 requests
# (oha, 16 connections); (count(N2) - count(N1)) / (N2 - N1) cancels start-up
# and shutdown. One command: bash benches/load/icount.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

N1=${N1:-2000}
N2=${N2:-12000}
BASE_PORT=${BASE_PORT:-18480} # upstream, nginx, sendgate use BASE_PORT..BASE_PORT+2
SKIP_BUILD=${SKIP_BUILD:-0}   # 1: use target/release/sendgate as it is
ICOUNT_BINARY=${ICOUNT_BINARY:-} # another build to count (implies no build), e.g. an older commit's
SCENARIOS=${SCENARIOS:-"get post send-phone send-rewrite"}

BENCH=icount
source "$HERE/lib.sh"
[[ $N1 =~ ^[0-9]+$ && $N2 =~ ^[0-9]+$ ]] && ((N1 >= 100 && N2 > N1 && N2 <= 200000)) ||
    die "want 100 <= N1 < N2 <= 200000"
# Checked before anything starts: `count` runs in a subshell, whose exit
# would leave its proxy running under valgrind.
for scenario in $SCENARIOS; do
    case $scenario in
    get | post | send-phone | send-rewrite) ;;
    *) die "unknown scenario $scenario (get, post, send-phone, send-rewrite)" ;;
    esac
done

need_tools valgrind nginx curl
command -v oha >/dev/null || timeout 900 cargo install oha --locked || die "oha is needed"
if [[ -z $ICOUNT_BINARY ]]; then
    [[ $SKIP_BUILD == 1 ]] || (cd "$ROOT" && cargo build --release)
    ICOUNT_BINARY=$ROOT/target/release/sendgate
fi
[[ -x $ICOUNT_BINARY ]] || die "no sendgate binary at $ICOUNT_BINARY"

UPORT=$BASE_PORT
NPORT=$((BASE_PORT + 1))
SPORT=$((BASE_PORT + 2))
TMP=$(mktemp -d /tmp/sendgate-icount.XXXXXX)
mkdir -p "$TMP/upstream" "$TMP/nginx"
cp "$ICOUNT_BINARY" "$TMP/sendgate"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

fill() { # template output
    sed -e "s|@TMP@|$TMP|g" -e "s|@UPORT@|$UPORT|g" -e "s|@NPORT@|$NPORT|g" \
        -e "s|@SPORT@|$SPORT|g" "$HERE/$1" >"$2"
}
fill nginx-upstream.conf.tmpl "$TMP/upstream/nginx.conf"
fill nginx-proxy.conf.tmpl "$TMP/nginx/nginx.conf"
fill sendgate-plain.toml.tmpl "$TMP/sendgate.toml"

wait_http() { # url pid: bounded wait (30 s; valgrind starts slowly)
    local i
    for i in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || die "a proxy exited at start (see $TMP)"
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    die "nothing answered on $1 within 30 s"
}

nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" </dev/null &
PIDS+=($!)
wait_http "http://127.0.0.1:$UPORT/" "${PIDS[0]}"

# The requests of run.sh's scenarios of the same names.
NUMBER_PATH=/v21.0/106540352242922
SEND_PATH=$NUMBER_PATH/messages
printf '%s' '{"messaging_product":"whatsapp","type":"image/jpeg","file":"0123456789abcdef0123456789abcdef0123456789abcdef"}' >"$TMP/media.json"
printf '%s' '{"messaging_product":"whatsapp","recipient_type":"individual","to":"+16315551234","type":"text","text":{"body":"hello"}}' >"$TMP/phone.json"
printf '%s' '{"messaging_product":"whatsapp","recipient_type":"individual","to":"US.13491208655302741918","type":"text","text":{"body":"hello"}}' >"$TMP/rewrite.json"

# Total instructions of one proxy serving `count` requests of a scenario.
count() { # proxy scenario count
    local port out=$TMP/callgrind.out pid
    case $1 in
    nginx)
        port=$NPORT
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            nginx -g 'master_process off;' -e "$TMP/nginx/error.log" -p "$TMP/nginx" \
            -c "$TMP/nginx/nginx.conf" </dev/null >/dev/null 2>"$TMP/valgrind.log" &
        ;;
    sendgate)
        port=$SPORT
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$TMP/sendgate" serve --config "$TMP/sendgate.toml" </dev/null >/dev/null 2>"$TMP/valgrind.log" &
        ;;
    esac
    pid=$!
    wait_http "http://127.0.0.1:$port/" "$pid"
    local args=(-n "$3" -c 16 --no-tui)
    case $2 in
    get) args+=("http://127.0.0.1:$port$NUMBER_PATH?fields=throughput") ;;
    post) args+=(-m POST -D "$TMP/media.json" -H 'content-type: application/json' "http://127.0.0.1:$port$NUMBER_PATH/media") ;;
    send-phone) args+=(-m POST -D "$TMP/phone.json" -H 'content-type: application/json' "http://127.0.0.1:$port$SEND_PATH") ;;
    send-rewrite) args+=(-m POST -D "$TMP/rewrite.json" -H 'content-type: application/json' "http://127.0.0.1:$port$SEND_PATH") ;;
    esac
    oha "${args[@]}" >/dev/null
    # Both exit on TERM (sendgate after draining), and callgrind writes its
    # totals on exit.
    kill -TERM "$pid"
    wait "$pid" || true
    awk '/^summary:/ {print $2}' "$out"
    rm -f "$out"
}

printf '| scenario | nginx | sendgate | sendgate ÷ nginx |\n|---|---|---|---|\n'
for scenario in $SCENARIOS; do
    declare -A per
    for proxy in nginx sendgate; do
        log "$proxy $scenario: $N1 and $N2 requests"
        low=$(count $proxy "$scenario" "$N1")
        high=$(count $proxy "$scenario" "$N2")
        per[$proxy]=$(((high - low) / (N2 - N1)))
    done
    python3 -c "import sys; n, s = int(sys.argv[2]), int(sys.argv[3]); print(f'| {sys.argv[1]} | {n:,} | {s:,} | {s / n:.2f}× |')" \
        "$scenario" "${per[nginx]}" "${per[sendgate]}"
done
log "sendgate: $ICOUNT_BINARY (tree at git $(cd "$ROOT" && git rev-parse --short HEAD)); N1=$N1 N2=$N2; user-space instructions per request"
