#!/usr/bin/env bash
# TLS termination benchmark: sendgate terminating HTTPS ([tls] cert/key)
# against nginx terminating HTTPS (`listen ... ssl` + `proxy_pass`, 1 worker,
# keep-alive upstream pool), in front of the same nginx upstream in clear, all
# on 127.0.0.1, measured in alternating runs of one process.
#
#   bash benches/load/tls.sh            # writes benches/load/tls-latest.md
#
# Two kinds of clients, each a text send to a phone (POST, forwarded as is):
#   keepalive  wrk -c$CONNS: a few TLS sessions, many requests each
#   handshake  wrk -c$CONNS with "Connection: close": a new TCP connection and
#              a full TLS handshake (TLS 1.3, X25519, ECDSA P-256) per request
# Figures: req/s, and the proxy's CPU per request (utime+stime of its
# processes over the run, from /proc). Needs nginx, wrk, openssl (installed if
# missing, as run.sh does).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

DURATION=${DURATION:-10}   # seconds per measured run
WARMUP=${WARMUP:-2}        # seconds of warm-up before each
ROUNDS=${ROUNDS:-3}        # rounds; the order of the two proxies flips each round
CONNS=${CONNS:-64}         # wrk connections
BASE_PORT=${BASE_PORT:-18380}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$HERE/tls-latest.md}

BENCH=tls
# shellcheck source=benches/load/lib.sh
source "$HERE/lib.sh"
need_tools nginx wrk curl python3 openssl
start_run upstream nginx

UPORT=$BASE_PORT NPORT=$((BASE_PORT + 1)) SPORT=$((BASE_PORT + 2))

# One certificate for both: ECDSA P-256, as certificate authorities issue by
# default today, signed by a CA made for the run.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout "$TMP/ca.key" -out "$TMP/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost" -keyout "$TMP/server.key" -out "$TMP/server.csr" 2>/dev/null
openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -CAcreateserial \
    -days 2 -copy_extensions copy -out "$TMP/server.pem" 2>/dev/null

sed -e "s|@TMP@|$TMP|g" -e "s|@UPORT@|$UPORT|g" "$HERE/nginx-upstream.conf.tmpl" >"$TMP/upstream/nginx.conf"
# nginx as run.sh configures it, its listener with TLS.
sed -e "s|@TMP@|$TMP|g" -e "s|@UPORT@|$UPORT|g" -e "s|@NPORT@|$NPORT|g" \
    -e "s|listen 127.0.0.1:$NPORT backlog=4096;|listen 127.0.0.1:$NPORT ssl backlog=4096;\n        ssl_certificate $TMP/server.pem;\n        ssl_certificate_key $TMP/server.key;|" \
    "$HERE/nginx-proxy.conf.tmpl" >"$TMP/nginx/nginx.conf"
grep -q "ssl_certificate $TMP/server.pem" "$TMP/nginx/nginx.conf" || die "nginx template changed: no TLS listener"
# run.sh's sendgate, its listener with TLS and its workers unpinned (the
# default): wrk spins on its socket while it waits for a handshake's answer,
# and a worker pinned to the CPU wrk spins on waits out wrk's time slice
# (~3 ms a handshake); unpinned, the scheduler moves it, as it moves nginx.
{
    sed -e "s|@UPORT@|$UPORT|g" -e "s|@SPORT@|$SPORT|g" -e "s|^worker_pin_cpus = true|worker_pin_cpus = false|" \
        "$HERE/sendgate-plain.toml.tmpl"
    printf '\n[tls]\ncert = "%s"\nkey = "%s"\n' "$TMP/server.pem" "$TMP/server.key"
} >"$TMP/sendgate.toml"
grep -q "^worker_pin_cpus = false" "$TMP/sendgate.toml" || die "sendgate template changed: workers still pinned"

nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" </dev/null &
PIDS+=($!)
wait_url upstream "http://127.0.0.1:$UPORT/" "${PIDS[-1]}"
nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" </dev/null &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_url nginx "https://localhost:$NPORT/" "$NGINX_PID" --cacert "$TMP/ca.pem"
"$TMP/sendgate" serve --config "$TMP/sendgate.toml" </dev/null >"$TMP/sendgate.log" 2>&1 &
SENDGATE_PID=$!
PIDS+=("$SENDGATE_PID")
wait_url sendgate "https://localhost:$SPORT/" "$SENDGATE_PID" --cacert "$TMP/ca.pem"

SEND_PATH=/v21.0/106540352242922/messages
BODY='{"messaging_product":"whatsapp","to":"16315551234","type":"text","text":{"body":"hello"}}'
for port in $NPORT $SPORT; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$TMP/ca.pem" \
        -H 'Content-Type: application/json' -H 'Authorization: Bearer bench-token' \
        --data "$BODY" "https://localhost:$port$SEND_PATH")
    [[ $code == 200 ]] || die "a send through port $port answered $code"
done
wrk_script "$TMP/keepalive.lua" "$BODY"
wrk_script "$TMP/handshake.lua" "$BODY" 'wrk.headers["Connection"] = "close"'

RAW=$TMP/raw.tsv
printf 'round\tproxy\tclients\trequests\tseconds\terrors\tproxy_cpu_s\n' >"$RAW"

measure() { # round proxy(nginx|sendgate) clients(keepalive|handshake)
    local r=$1 proxy=$2 clients=$3 port pids out="$TMP/runs/r$1-$2-$3" c0 c1
    if [[ $proxy == nginx ]]; then
        port=$NPORT
        # The master and its worker: the worker does the work.
        pids="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
    else
        port=$SPORT pids=$SENDGATE_PID
    fi
    local url="https://localhost:$port$SEND_PATH"
    run() { timeout $(($1 + 30)) wrk -t1 -c"$CONNS" -d"$1s" -s "$TMP/$clients.lua" "$url" >"$2" 2>&1; }
    ((WARMUP > 0)) && { run "$WARMUP" "$out.warmup" || die "warm-up $proxy $clients"; }
    # shellcheck disable=SC2086
    c0=$(ticks $pids)
    run "$DURATION" "$out" || die "$proxy $clients run failed (see $out)"
    # shellcheck disable=SC2086
    c1=$(ticks $pids)
    python3 - "$r" "$proxy" "$clients" "$out" "$TCK" $((c1 - c0)) >>"$RAW" <<'PY'
import re, sys
r, proxy, clients, out, tck, dc = sys.argv[1:]
m = re.search(r"RESULT requests=(\d+) duration_us=(\d+) errors=(\d+)", open(out).read())
print("\t".join([r, proxy, clients, m[1], f"{int(m[2]) / 1e6:.3f}", m[3], f"{int(dc) / float(tck):.2f}"]))
PY
    tail -n 1 "$RAW" | awk -F'\t' '{ printf "  %-8s %-9s %8.0f req/s  %5.1f us CPU/req  errors %s\n", $2, $3, $4 / $5, $7 * 1e6 / $4, $6 }' >&2
}

log "$ROUNDS rounds: nginx and sendgate alternating (order flipped each round), keep-alive then new handshakes"
for r in $(seq 1 "$ROUNDS"); do
    log "round $r"
    order="nginx sendgate"
    ((r % 2 == 0)) && order="sendgate nginx"
    for clients in keepalive handshake; do
        for proxy in $order; do measure "$r" "$proxy" "$clients"; done
    done
done

NPROC=$(nproc)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
NGINX_VERSION=$(nginx -v 2>&1 | sed 's|.*/||')
WRK_VERSION=$( (wrk -v 2>&1 || true) | head -n1 | awk '{print $2}')
python3 - "$RAW" "$OUT" "$GIT_REV" "$NPROC" "$CPU_MODEL" "$NGINX_VERSION" "$WRK_VERSION" "$ROUNDS" "$DURATION" "$CONNS" <<'PY'
import csv, statistics, sys, datetime
raw, out, rev, nproc, cpu, nginx, wrk, rounds, duration, conns = sys.argv[1:]
rows = list(csv.DictReader(open(raw), delimiter="\t"))
def runs(proxy, clients):
    return {int(x["round"]): x for x in rows if x["proxy"] == proxy and x["clients"] == clients}
def rate(x): return int(x["requests"]) / float(x["seconds"])
def cpu_us(x): return float(x["proxy_cpu_s"]) * 1e6 / int(x["requests"])
def med(values): return f"{statistics.median(values):,.{0 if max(values) > 100 else 2}f} ({min(values):,.{0 if max(values) > 100 else 2}f}–{max(values):,.{0 if max(values) > 100 else 2}f})"
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines = [f"At {rev} ({now}, {nproc} CPUs {cpu}; nginx/{nginx} 1 worker, wrk {wrk}; "
         f"{rounds} rounds of {duration} s, {conns} connections, `bash benches/load/tls.sh`):", "",
         "| clients | proxy | req/s median (min–max) | CPU µs/req | req/s ÷ nginx | CPU ÷ nginx | errors |",
         "|---|---|---|---|---|---|---|"]
for clients in ("keepalive", "handshake"):
    n, s = runs("nginx", clients), runs("sendgate", clients)
    rounds_both = sorted(set(n) & set(s))
    for proxy, data in (("nginx", n), ("sendgate", s)):
        rates = [rate(data[r]) for r in rounds_both]
        cpus = [cpu_us(data[r]) for r in rounds_both]
        errors = sum(int(data[r]["errors"]) for r in rounds_both)
        if proxy == "nginx":
            ratio = cpu_ratio = "1.00×"
        else:
            ratios = [rate(s[r]) / rate(n[r]) for r in rounds_both]
            cpu_ratios = [cpu_us(s[r]) / cpu_us(n[r]) for r in rounds_both]
            ratio = f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"
            cpu_ratio = f"{statistics.median(cpu_ratios):.2f}× ({min(cpu_ratios):.2f}–{max(cpu_ratios):.2f})"
        lines.append(f"| {clients} | {proxy} | {med(rates)} | {med(cpus)} | {ratio} | {cpu_ratio} | {errors} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "written: $OUT"
