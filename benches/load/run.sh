#!/usr/bin/env bash
# Load benchmark: sendgate against a plain nginx reverse proxy, both in front
# of the same fixed nginx upstream, all on 127.0.0.1. See README.md beside
# this file. One command: bash benches/load/run.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# ---- knobs (environment variables) -----------------------------------------
DURATION=${DURATION:-10}      # seconds per measured run (wrk and oha alike)
WARMUP=${WARMUP:-2}           # seconds of warm-up before each measured run
ROUNDS=${ROUNDS:-3}           # round-robin repetitions of the whole scenario list
RATE=${RATE:-5000}            # fixed request rate (req/s) of the latency runs
CONNS=${CONNS:-64}            # wrk connections for the saturation runs
LAT_CONNS=${LAT_CONNS:-50}    # oha connections for the fixed-rate latency runs
PIN=${PIN:-0}                 # 1: proxy under test on CPU 0, load generator and upstream on CPU 1
PAIR=${PAIR:-1}               # 1: pair each proxy's saturation run with an adjacent nginx run (ratios from pairs)
BASE_PORT=${BASE_PORT:-18180} # upstream, nginx, sendgate, sendgate-limits, hyper-floor, sendgate-limits' admin use BASE_PORT..BASE_PORT+5
LATENCY_TOOL=${LATENCY_TOOL:-oha}   # oha (open loop, fixed rate) or wrk (fallback: closed loop)
OHA_INSTALL_TIMEOUT=${OHA_INSTALL_TIMEOUT:-900}
SKIP_BUILD=${SKIP_BUILD:-0}   # 1: use target/release/sendgate as it is
KEEP_TMP=${KEEP_TMP:-0}       # 1: keep the temp dir (configs, logs, raw outputs)
OUT=${OUT:-$HERE/results-latest.md}
SCENARIOS=${SCENARIOS:-"direct nginx nginx-get hyper-floor sendgate-get sendgate-post sendgate-send-phone sendgate-send-rewrite sendgate-send-limits-warm"}

BENCH=load
source "$HERE/lib.sh"
int_in DURATION "$DURATION" 1 120
int_in WARMUP "$WARMUP" 0 60
int_in ROUNDS "$ROUNDS" 1 20
int_in RATE "$RATE" 1 200000
int_in CONNS "$CONNS" 1 4096
int_in LAT_CONNS "$LAT_CONNS" 1 4096
int_in BASE_PORT "$BASE_PORT" 1024 65000
[[ $PAIR == 0 || $PAIR == 1 ]] || die "PAIR must be 0 or 1"
[[ $LATENCY_TOOL == oha || $LATENCY_TOOL == wrk ]] || die "LATENCY_TOOL must be oha or wrk"

UPORT=$BASE_PORT
NPORT=$((BASE_PORT + 1))
SPORT=$((BASE_PORT + 2))
LPORT=$((BASE_PORT + 3))
FPORT=$((BASE_PORT + 4))
APORT=$((BASE_PORT + 5))
START_TIME=$(date +%s)
LATENCY_NOTE=""

# ---- 1. tools ---------------------------------------------------------------
need_tools nginx wrk curl python3
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rust-version in Cargo.toml) first"

if [[ $LATENCY_TOOL == oha ]] && ! command -v oha >/dev/null; then
    log "installing oha with cargo install --locked (once; up to ${OHA_INSTALL_TIMEOUT}s)"
    if ! timeout "$OHA_INSTALL_TIMEOUT" cargo install oha --locked; then
        log "WARNING: oha could not be installed; falling back to wrk for latency (closed loop)"
        LATENCY_TOOL=wrk
        LATENCY_NOTE="oha failed to install"
    fi
fi
if [[ $LATENCY_TOOL == wrk ]]; then
    # wrk is closed loop: no fixed rate, no coordinated-omission correction.
    # A low connection count keeps the proxies far from saturation.
    LAT_CONNS=${WRK_LAT_CONNS:-4}
fi

# ---- 2. build ---------------------------------------------------------------
if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release (sendgate and examples/hyper_floor)"
    (cd "$ROOT" && cargo build --release && cargo build --release --example hyper_floor)
fi
[[ -x $ROOT/target/release/sendgate ]] || die "no $ROOT/target/release/sendgate"
[[ -x $ROOT/target/release/examples/hyper_floor ]] || die "no $ROOT/target/release/examples/hyper_floor"

TMP=$(mktemp -d /tmp/sendgate-load.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$TMP/upstream" "$TMP/nginx" "$TMP/runs"
# A private copy, so that a rebuild during the run does not swap the binary.
cp "$ROOT/target/release/sendgate" "$TMP/sendgate"
cp "$ROOT/target/release/examples/hyper_floor" "$TMP/hyper_floor"
GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null) ]]; then GIT_REV="$GIT_REV+dirty"; fi

# ---- process bookkeeping: everything started is stopped on exit ------------
PIDS=()
cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    if [[ -n ${LG_PID:-} ]]; then kill -TERM "$LG_PID" 2>/dev/null || true; fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[i]}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for i in $(seq 1 50); do # at most 5 s each
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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

PROXY_CPUSET=""
OTHER_CPUSET=""
if [[ $PIN == 1 ]]; then
    (($(nproc) >= 2)) || die "PIN=1 needs at least 2 CPUs"
    PROXY_CPUSET="taskset -c 0"
    OTHER_CPUSET="taskset -c 1"
fi

for port in $UPORT $NPORT $SPORT $LPORT $FPORT $APORT; do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use (set BASE_PORT)"
    fi
done

fill() { # template output
    sed -e "s|@TMP@|$TMP|g" -e "s|@UPORT@|$UPORT|g" -e "s|@NPORT@|$NPORT|g" \
        -e "s|@SPORT@|$SPORT|g" -e "s|@LPORT@|$LPORT|g" -e "s|@APORT@|$APORT|g" "$HERE/$1" >"$2"
}
fill nginx-upstream.conf.tmpl "$TMP/upstream/nginx.conf"
fill nginx-proxy.conf.tmpl "$TMP/nginx/nginx.conf"
fill sendgate-plain.toml.tmpl "$TMP/sendgate-plain.toml"
fill sendgate-limits.toml.tmpl "$TMP/sendgate-limits.toml"

wait_http() { # name url pid: bounded wait (10 s) for any HTTP answer
    local i
    for i in $(seq 1 100); do
        kill -0 "$3" 2>/dev/null || die "$1 exited at start (see $TMP)"
        if curl -s -o /dev/null --max-time 1 "$2"; then return 0; fi
        sleep 0.1
    done
    die "$1 did not answer on $2 within 10 s"
}

# ---- 3/4. upstream, nginx reference, two sendgates -------------------------
$OTHER_CPUSET nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" </dev/null &
UP_PID=$!
PIDS+=("$UP_PID")
wait_http upstream "http://127.0.0.1:$UPORT/" "$UP_PID"

$PROXY_CPUSET nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" </dev/null &
NG_PID=$!
PIDS+=("$NG_PID")
wait_http nginx "http://127.0.0.1:$NPORT/" "$NG_PID"

$PROXY_CPUSET "$TMP/sendgate" serve --config "$TMP/sendgate-plain.toml" </dev/null >"$TMP/sendgate-plain.log" 2>&1 &
SG_PID=$!
PIDS+=("$SG_PID")
wait_http sendgate "http://127.0.0.1:$SPORT/" "$SG_PID"

SENDGATE_ADMIN_TOKEN=bench $PROXY_CPUSET "$TMP/sendgate" serve --config "$TMP/sendgate-limits.toml" </dev/null >"$TMP/sendgate-limits.log" 2>&1 &
SL_PID=$!
PIDS+=("$SL_PID")
wait_http sendgate-limits "http://127.0.0.1:$LPORT/" "$SL_PID"

# The floor under any hyper proxy built like sendgate, doing no inspection.
$PROXY_CPUSET "$TMP/hyper_floor" "127.0.0.1:$FPORT" "127.0.0.1:$UPORT" 2 </dev/null >"$TMP/hyper-floor.log" 2>&1 &
HF_PID=$!
PIDS+=("$HF_PID")
wait_http hyper-floor "http://127.0.0.1:$FPORT/" "$HF_PID"

children_of() { # pid -> its child pids (nginx workers), without procps
    local f s ppid
    for f in /proc/[0-9]*/stat; do
        { read -r s <"$f"; } 2>/dev/null || continue
        s=${s##*) }
        read -r _ ppid _ <<<"$s"
        if [[ $ppid == "$1" ]]; then
            f=${f#/proc/}
            echo "${f%/stat}"
        fi
    done
}
UP_PIDS=$(echo "$UP_PID" $(children_of "$UP_PID"))
NG_PIDS=$(echo "$NG_PID" $(children_of "$NG_PID"))
[[ $(wc -w <<<"$UP_PIDS") -ge 2 && $(wc -w <<<"$NG_PIDS") -ge 2 ]] || die "nginx workers not found"
log "upstream pids: $UP_PIDS; nginx pids: $NG_PIDS; sendgate pid: $SG_PID; sendgate-limits pid: $SL_PID; hyper-floor pid: $HF_PID"

# ---- requests -----------------------------------------------------------------
NUMBER_PATH=/v21.0/106540352242922
SEND_PATH=$NUMBER_PATH/messages
GET_PATH="$NUMBER_PATH?fields=throughput"
MEDIA_PATH=$NUMBER_PATH/media
BODY_PHONE='{"messaging_product":"whatsapp","recipient_type":"individual","to":"+16315551234","type":"text","text":{"body":"hello"}}'
BODY_BSUID_TO='{"messaging_product":"whatsapp","recipient_type":"individual","to":"US.13491208655302741918","type":"text","text":{"body":"hello"}}'
BODY_BSUID_ONLY='{"messaging_product":"whatsapp","recipient":"US.13491208655302741918","type":"text","text":{"body":"hello"}}'
PAIR_IMPORT='{"bsuid":"US.13491208655302741918","phone":"16315551234","number":"106540352242922"}'
BODY_MEDIA='{"messaging_product":"whatsapp","type":"image/jpeg","file":"0123456789abcdef0123456789abcdef0123456789abcdef"}'

# scenario -> PORT METHOD URLPATH BODY CTYPE PROXY(pids of the proxy process) EXPECT(x-sendgate-decision)
define() {
    CTYPE=application/json
    case $1 in
    direct) PORT=$UPORT METHOD=POST URLPATH=$SEND_PATH BODY=$BODY_PHONE PROXY="" EXPECT="" ;;
    nginx) PORT=$NPORT METHOD=POST URLPATH=$SEND_PATH BODY=$BODY_PHONE PROXY=$NG_PIDS EXPECT="" ;;
    nginx-get) PORT=$NPORT METHOD=GET URLPATH=$GET_PATH BODY="" PROXY=$NG_PIDS EXPECT="" ;;
    hyper-floor) PORT=$FPORT METHOD=POST URLPATH=$SEND_PATH BODY=$BODY_PHONE PROXY=$HF_PID EXPECT="" ;;
    sendgate-get) PORT=$SPORT METHOD=GET URLPATH=$GET_PATH BODY="" PROXY=$SG_PID EXPECT="" ;;
    sendgate-post) PORT=$SPORT METHOD=POST URLPATH=$MEDIA_PATH BODY=$BODY_MEDIA PROXY=$SG_PID EXPECT="" ;;
    sendgate-send-phone) PORT=$SPORT METHOD=POST URLPATH=$SEND_PATH BODY=$BODY_PHONE PROXY=$SG_PID EXPECT="forwarded" ;;
    sendgate-send-rewrite) PORT=$SPORT METHOD=POST URLPATH=$SEND_PATH BODY=$BODY_BSUID_TO PROXY=$SG_PID EXPECT="rewritten: to->recipient" ;;
    sendgate-send-limits-warm) PORT=$LPORT METHOD=POST URLPATH=$SEND_PATH BODY=$BODY_BSUID_ONLY PROXY=$SL_PID EXPECT="resolved: bsuid->phone" ;;
    *) die "unknown scenario $1" ;;
    esac
    URL="http://127.0.0.1:$PORT$URLPATH"
}

# The nginx scenario a proxy scenario's saturation run is paired with: the
# same kind of request through the reference proxy. None for the baselines.
reference_of() { # scenario
    ((PAIR == 1)) || return 0
    case $1 in
    direct | nginx | nginx-get) ;;
    sendgate-get) echo nginx-get ;;
    *) echo nginx ;;
    esac
}

# Give sendgate-limits the phone<->BSUID pair once, as an operator import
# (a send teaches nothing); the checks below warm its identity cache.
curl -s -o /dev/null --max-time 5 -X POST -H 'Authorization: Bearer bench' \
    --data "$PAIR_IMPORT" "http://127.0.0.1:$APORT/admin/identities"

# The scenarios asked for and the nginx ones their runs are paired with.
PREPARE=$SCENARIOS
for s in $SCENARIOS; do
    ref=$(reference_of "$s")
    if [[ -n $ref && " $PREPARE " != *" $ref "* ]]; then PREPARE="$PREPARE $ref"; fi
done

# Check that every scenario answers 200 and that sendgate decides as expected.
for s in $PREPARE; do
    define "$s"
    args=(-s -o /dev/null -D "$TMP/check.headers" --max-time 5 -X "$METHOD")
    [[ -n $BODY ]] && args+=(-H "Content-Type: $CTYPE" --data "$BODY")
    code=$(curl "${args[@]}" -w '%{http_code}' "$URL")
    decision=$(tr -d '\r' <"$TMP/check.headers" | sed -n 's/^x-sendgate-decision: //Ip')
    [[ $code == 200 ]] || die "$s: HTTP $code from $URL"
    [[ $decision == "$EXPECT" ]] || die "$s: x-sendgate-decision '$decision', expected '$EXPECT'"
    log "check $s: 200${decision:+, decision: $decision}"

    # wrk script for this scenario (method, body, headers, machine-readable summary)
    {
        echo "wrk.method = \"$METHOD\""
        if [[ -n $BODY ]]; then
            echo "wrk.body = [==[$BODY]==]"
            echo "wrk.headers[\"Content-Type\"] = \"$CTYPE\""
        fi
        cat <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d status_errors=%d socket_errors=%d p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
LUA
    } >"$TMP/$s.lua"
    [[ -n $BODY ]] && printf '%s' "$BODY" >"$TMP/$s.body"
done

# ---- measurement helpers -----------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

TICKS=0
ticks_of() { # pids... -> TICKS = utime+stime of all threads, in clock ticks
    local pid s
    TICKS=0
    for pid in "$@"; do
        s=$(<"/proc/$pid/stat") || die "process $pid is gone"
        s=${s##*) }
        # shellcheck disable=SC2086
        set -- $s
        TICKS=$((TICKS + ${12} + ${13}))
    done
}
VOL=0
INVOL=0
switches_of() { # pids... -> VOL, INVOL = context switches of all their threads
    local pid status key value
    VOL=0
    INVOL=0
    for pid in "$@"; do
        for status in /proc/"$pid"/task/*/status; do
            while read -r key value; do
                case $key in
                voluntary_ctxt_switches:) VOL=$((VOL + value)) ;;
                nonvoluntary_ctxt_switches:) INVOL=$((INVOL + value)) ;;
                esac
            done <"$status"
        done
    done
}
BUSY=0
machine_busy() { # BUSY = non-idle ticks of all CPUs
    local cpu user nice system idle iowait irq softirq steal rest
    read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
    BUSY=$((user + nice + system + irq + softirq + steal))
}
CHILD_S=0
children_seconds() { # from `times` written to a file: user+sys of waited-for children
    CHILD_S=$(awk 'NR == 2 {
        s = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] }
        printf "%.3f", s }' "$1")
}

LG_PID=""
loadgen() { # kind(wrk|lat) scenario duration output
    # Run in the background and wait, so that a signal stops the script (and
    # the trap kills the generator) at once instead of after the run.
    local kind=$1 s=$2 d=$3 out=$4 rc=0
    define "$s"
    if [[ $kind == wrk ]]; then
        timeout $((d + 30)) $OTHER_CPUSET wrk -t1 -c"$CONNS" -d"${d}s" -s "$TMP/$s.lua" "$URL" >"$out" 2>&1 &
    elif [[ $LATENCY_TOOL == oha ]]; then
        local args=(--no-tui --output-format json -z "${d}s" -c "$LAT_CONNS" -q "$RATE" --latency-correction -w -m "$METHOD")
        [[ -n $BODY ]] && args+=(-H "Content-Type: $CTYPE" -D "$TMP/$s.body")
        timeout $((d + 30)) $OTHER_CPUSET oha "${args[@]}" "$URL" >"$out" 2>"$out.err" &
    else
        timeout $((d + 30)) $OTHER_CPUSET wrk -t1 -c"$LAT_CONNS" -d"${d}s" -s "$TMP/$s.lua" "$URL" >"$out" 2>&1 &
    fi
    LG_PID=$!
    wait "$LG_PID" || rc=$?
    LG_PID=""
    return "$rc"
}

RAW=$TMP/raw.tsv
printf 'round\tscenario\tkind\trequests\tseconds\tstatus_errors\tsocket_errors\tproxy_cpu_s\tupstream_cpu_s\tloadgen_cpu_s\tmachine_busy_s\tp50_ms\tp99_ms\tp999_ms\tproxy_voluntary_switches\tproxy_involuntary_switches\treference_for\n' >"$RAW"

measure() { # round kind scenario [scenario this run is the nginx reference for]
    local r=$1 kind=$2 s=$3 for=${4:-} out="$TMP/runs/r$1-$2-$3${4:+-for-$4}"
    local p0 p1 u0 u1 b0 b1 c0 c1 v0=0 v1=0 i0=0 i1=0
    define "$s"
    # warm-up: same tool, same target, not recorded
    if ((WARMUP > 0)); then loadgen "$kind" "$s" "$WARMUP" "$out.warmup" || die "$s: warm-up $kind run failed (see $out.warmup)"; fi
    if [[ -n $PROXY ]]; then
        switches_of $PROXY; v0=$VOL; i0=$INVOL
        ticks_of $PROXY; p0=$TICKS
    else p0=0; fi
    ticks_of $UP_PIDS; u0=$TICKS
    machine_busy; b0=$BUSY
    times >"$out.t0"
    loadgen "$kind" "$s" "$DURATION" "$out" || die "$s: $kind run failed (see $out)"
    times >"$out.t1"
    machine_busy; b1=$BUSY
    ticks_of $UP_PIDS; u1=$TICKS
    if [[ -n $PROXY ]]; then
        ticks_of $PROXY; p1=$TICKS
        switches_of $PROXY; v1=$VOL; i1=$INVOL
    else p1=0; fi
    children_seconds "$out.t0"; c0=$CHILD_S
    children_seconds "$out.t1"; c1=$CHILD_S
    python3 - "$r" "$s" "$kind" "$out" "$LATENCY_TOOL" "$CLK_TCK" $((p1 - p0)) $((u1 - u0)) $((b1 - b0)) "$c0" "$c1" \
        $((v1 - v0)) $((i1 - i0)) "$for" >>"$RAW" <<'PY'
import json, re, sys
r, s, kind, out, tool, tck, dp, du, db, c0, c1, dv, di, ref_for = sys.argv[1:]
tck = float(tck)
row = None
if kind == "wrk" or tool == "wrk":
    text = open(out).read()
    m = re.search(r"RESULT requests=(\d+) duration_us=(\d+) status_errors=(\d+) socket_errors=(\d+) "
                  r"p50_us=(\d+) p99_us=(\d+) p999_us=(\d+)", text)
    if not m:
        sys.exit(f"{out}: no RESULT line:\n{text}")
    n, dur, se, ke, p50, p99, p999 = (int(x) for x in m.groups())
    row = [n, dur / 1e6, se, ke, p50 / 1e3, p99 / 1e3, p999 / 1e3]
else:
    j = json.load(open(out))
    summ = j["summary"]
    codes = j.get("statusCodeDistribution", {})
    n = sum(int(v) for v in codes.values())
    bad = sum(int(v) for k, v in codes.items() if not k.startswith("2"))
    errs = sum(int(v) for v in j.get("errorDistribution", {}).values())
    pct = j["latencyPercentiles"]
    ms = lambda k: (pct.get(k) or float("nan")) * 1e3
    row = [n, summ["total"], bad, errs, ms("p50"), ms("p99"), ms("p99.9")]
n, secs, se, ke, p50, p99, p999 = row
print("\t".join(str(x) for x in [
    r, s, kind, n, f"{secs:.3f}", se, ke,
    f"{int(dp) / tck:.2f}", f"{int(du) / tck:.2f}", f"{float(c1) - float(c0):.3f}", f"{int(db) / tck:.2f}",
    f"{p50:.4f}", f"{p99:.4f}", f"{p999:.4f}", dv, di, ref_for]))
PY
    tail -n 1 "$RAW" | awk -F'\t' -v w="$kind" '{
        if (w == "wrk") printf "  %-26s %-3s %9.0f req/s  proxy %6.1f us/req  errors %s/%s%s\n", $2, $3, $4 / $5, ($8 > 0 ? $8 * 1e6 / $4 : $9 * 1e6 / $4), $6, $7, ($17 != "" ? "  (reference for " $17 ")" : "")
        else printf "  %-26s %-3s %9.0f req/s  p50 %.3f  p99 %.3f  p99.9 %.3f ms  errors %s/%s\n", $2, $3, $4 / $5, $12, $13, $14, $6, $7 }' >&2
}

# A scenario's saturation run, and the nginx run it is paired with: the two
# run back to back, the nginx one after in odd rounds and before in even
# ones, so that the machine's drift (up to 15% over a few minutes here)
# bears on both alike and its slope cancels over rounds.
saturate() { # round scenario
    local r=$1 s=$2 ref
    ref=$(reference_of "$s")
    if [[ -n $ref ]] && ((r % 2 == 0)); then measure "$r" wrk "$ref" "$s"; fi
    measure "$r" wrk "$s"
    if [[ -n $ref ]] && ((r % 2 == 1)); then measure "$r" wrk "$ref" "$s"; fi
}

# ---- 5. rounds -----------------------------------------------------------------
read -r -a LIST <<<"$SCENARIOS"
N=${#LIST[@]}
PAIRED=0
for s in "${LIST[@]}"; do [[ -n $(reference_of "$s") ]] && PAIRED=$((PAIRED + 1)); done
PER_ROUND=$((N * (2 * (DURATION + WARMUP) + 2) + PAIRED * (DURATION + WARMUP + 1)))
log "$ROUNDS rounds x $N scenarios x (wrk + latency) + $PAIRED paired nginx runs, about $((ROUNDS * PER_ROUND / 60 + 1)) min"
BENCH_START=$(date +%s)
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    for ((i = 0; i < N; i++)); do
        s=${LIST[$(((i + r - 1) % N))]} # order rotated by one each round
        saturate "$r" "$s"
        measure "$r" lat "$s"
    done
done
BENCH_END=$(date +%s)

# Nothing may have died or answered badly along the way.
for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "process $pid died during the run"; done
if grep -qiE 'panic|error' "$TMP/sendgate-plain.log" "$TMP/sendgate-limits.log"; then
    log "WARNING: sendgate logged errors (see $TMP/sendgate-*.log)"
fi

# ---- 6. report -----------------------------------------------------------------
META=$TMP/meta.env
{
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    echo "kernel=$(uname -srm)"
    echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
    if [[ $LATENCY_TOOL == oha ]]; then echo "oha=$(oha --version | head -n1)"; else echo "oha=not used"; fi
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "git=$GIT_REV"
    echo "rustc=$(rustc --version 2>/dev/null || echo unknown)"
    echo "duration=$DURATION"
    echo "warmup=$WARMUP"
    echo "rounds=$ROUNDS"
    echo "rate=$RATE"
    echo "conns=$CONNS"
    echo "lat_conns=$LAT_CONNS"
    echo "latency_tool=$LATENCY_TOOL"
    echo "latency_note=$LATENCY_NOTE"
    echo "pin=$PIN"
    echo "pair=$PAIR"
    echo "bench_seconds=$((BENCH_END - BENCH_START))"
    echo "loadavg_start=$LOADAVG_START"
    echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$META"

cp "$RAW" "${OUT%.md}.tsv"
python3 "$HERE/report.py" "$RAW" "$META" >"$OUT"
cat "$OUT"
log "wrote $OUT and ${OUT%.md}.tsv; total $(($(date +%s) - START_TIME)) s (measurement $((BENCH_END - BENCH_START)) s)"
