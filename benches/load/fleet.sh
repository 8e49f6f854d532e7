#!/usr/bin/env bash
# Fleet benchmark: what sharing state through Redis costs one replica. The
# same sendgate config (number, pair and client limits on, a known pair) runs
# twice side by side: single-machine (in-process limits, in-memory store) and
# fleet (fleet.redis_url: limits and identities in Redis), in front of the same
# nginx upstream, all on 127.0.0.1, measured in alternating runs.
#
#   bash benches/load/fleet.sh            # writes benches/load/fleet-latest.md
#
# Figures: req/s at saturation (wrk) and its fleet ÷ single ratio per round;
# p50/p99 at a fixed rate (oha, open loop) and the fleet's added p99; Redis
# commands per send (INFO commandstats over a measured run) and Redis' CPU per
# send. Needs nginx, wrk, oha, redis-server (installed if missing, as run.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-2000}
CONNS=${CONNS:-64}
LAT_CONNS=${LAT_CONNS:-50}
BASE_PORT=${BASE_PORT:-18280}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$HERE/fleet-latest.md}

BENCH=fleet
# shellcheck source=benches/load/lib.sh
source "$HERE/lib.sh"
need_tools nginx wrk curl python3 redis-server
command -v oha >/dev/null || timeout 900 cargo install oha --locked || die "oha could not be installed"
start_run upstream redis

UPORT=$BASE_PORT SPORT=$((BASE_PORT + 1)) FPORT=$((BASE_PORT + 2))
SAPORT=$((BASE_PORT + 3)) FAPORT=$((BASE_PORT + 4)) RPORT=$((BASE_PORT + 5))
sed -e "s|@TMP@|$TMP|g" -e "s|@UPORT@|$UPORT|g" "$HERE/nginx-upstream.conf.tmpl" >"$TMP/upstream/nginx.conf"
limits_config() { # listen-port admin-port -> the limits config of run.sh for that instance
    sed -e "s|@LPORT@|$1|g" -e "s|@UPORT@|$UPORT|g" -e "s|@APORT@|$2|g" "$HERE/sendgate-limits.toml.tmpl"
}
limits_config "$SPORT" "$SAPORT" >"$TMP/single.toml"
{
    limits_config "$FPORT" "$FAPORT"
    printf '\n[fleet]\nredis_url = "redis://127.0.0.1:%s/0"\n' "$RPORT"
} >"$TMP/fleet.toml"

nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" </dev/null &
PIDS+=($!)
wait_url upstream "http://127.0.0.1:$UPORT/" "${PIDS[-1]}"
# As the README advises for a fleet: every write on disk before Redis answers.
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMP/redis" --save "" \
    --appendonly yes --appendfsync always >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_for redis "$REDIS_PID" redis-cli -p "$RPORT" ping
export SENDGATE_ADMIN_TOKEN=bench
"$TMP/sendgate" serve --config "$TMP/single.toml" </dev/null >"$TMP/single.log" 2>&1 &
SINGLE_PID=$!
PIDS+=("$SINGLE_PID")
"$TMP/sendgate" serve --config "$TMP/fleet.toml" </dev/null >"$TMP/fleet.log" 2>&1 &
FLEET_PID=$!
PIDS+=("$FLEET_PID")
wait_url single "http://127.0.0.1:$SPORT/" "$SINGLE_PID"
wait_url fleet "http://127.0.0.1:$FPORT/" "$FLEET_PID"

SEND_PATH=/v21.0/106540352242922/messages
BODY='{"messaging_product":"whatsapp","recipient":"US.13491208655302741918","type":"text","text":{"body":"hello"}}'
PAIR='{"bsuid":"US.13491208655302741918","phone":"16315551234","number":"106540352242922"}'
printf '%s' "$BODY" >"$TMP/body"
wrk_script "$TMP/send.lua" "$BODY"
for port in $SAPORT $FAPORT; do
    curl -s -o /dev/null --max-time 5 -X POST -H 'Authorization: Bearer bench' --data "$PAIR" \
        "http://127.0.0.1:$port/admin/identities" || die "import on $port"
done
for port in $SPORT $FPORT; do
    decision=$(curl -s -o /dev/null -D - --max-time 5 -H 'Content-Type: application/json' \
        -H 'Authorization: Bearer bench-token' --data "$BODY" "http://127.0.0.1:$port$SEND_PATH" |
        tr -d '\r' | sed -n 's/^x-sendgate-decision: //Ip')
    [[ $decision == "resolved: bsuid->phone" ]] || die "port $port decided '$decision'"
done

RAW=$TMP/raw.tsv
printf 'round\tsetup\tkind\trequests\tseconds\terrors\tp50_ms\tp99_ms\tproxy_cpu_s\tredis_cpu_s\tredis_commands\tevalsha\tredis_calls\n' >"$RAW"

redis_calls() { # the fleet instance's count of calls to Redis (its metric)
    curl -s --max-time 5 -H 'Authorization: Bearer bench' "http://127.0.0.1:$FAPORT/metrics" |
        awk '$1 == "sendgate_fleet_redis_calls_total" { print $2 }'
}

measure() { # round setup(single|fleet) kind(wrk|lat)
    local r=$1 setup=$2 kind=$3 port pid out="$TMP/runs/r$1-$2-$3" p0 p1 q0 q1
    if [[ $setup == single ]]; then port=$SPORT pid=$SINGLE_PID; else port=$FPORT pid=$FLEET_PID; fi
    local url="http://127.0.0.1:$port$SEND_PATH"
    run() { # duration output
        if [[ $kind == wrk ]]; then
            timeout $(($1 + 30)) wrk -t1 -c"$CONNS" -d"$1s" -s "$TMP/send.lua" "$url" >"$2" 2>&1
        else
            timeout $(($1 + 30)) oha --no-tui --output-format json -z "$1s" -c "$LAT_CONNS" -q "$RATE" \
                --latency-correction -m POST -H 'Content-Type: application/json' \
                -H 'Authorization: Bearer bench-token' -D "$TMP/body" "$url" >"$2" 2>"$2.err"
        fi
    }
    ((WARMUP > 0)) && { run "$WARMUP" "$out.warmup" || die "warm-up $setup $kind"; }
    redis-cli -p "$RPORT" config resetstat >/dev/null
    local k0 k1
    k0=$(redis_calls)
    p0=$(ticks "$pid")
    q0=$(ticks "$REDIS_PID")
    run "$DURATION" "$out" || die "$setup $kind run failed (see $out)"
    p1=$(ticks "$pid")
    q1=$(ticks "$REDIS_PID")
    k1=$(redis_calls)
    [[ $setup == fleet ]] || { k0=0; k1=0; }
    redis-cli -p "$RPORT" info commandstats >"$out.redis"
    python3 - "$r" "$setup" "$kind" "$out" "$TCK" $((p1 - p0)) $((q1 - q0)) $((k1 - k0)) >>"$RAW" <<'PY'
import json, re, sys
r, setup, kind, out, tck, dp, dq, calls_made = sys.argv[1:]
tck = float(tck)
stats = open(out + ".redis").read()
calls = {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", stats)}
# The INFO that read these counts is not the proxy's.
commands = sum(calls.values()) - calls.get("info", 0)
if kind == "wrk":
    m = re.search(r"RESULT requests=(\d+) duration_us=(\d+) errors=(\d+)", open(out).read())
    n, secs, errors, p50, p99 = int(m[1]), int(m[2]) / 1e6, int(m[3]), float("nan"), float("nan")
else:
    j = json.load(open(out))
    codes = j.get("statusCodeDistribution", {})
    n = sum(int(v) for v in codes.values())
    errors = sum(int(v) for k, v in codes.items() if not k.startswith("2"))
    errors += sum(int(v) for v in j.get("errorDistribution", {}).values())
    secs = j["summary"]["total"]
    p50, p99 = (j["latencyPercentiles"][k] * 1e3 for k in ("p50", "p99"))
print("\t".join(str(x) for x in [r, setup, kind, n, f"{secs:.3f}", errors, f"{p50:.4f}", f"{p99:.4f}",
    f"{int(dp) / tck:.2f}", f"{int(dq) / tck:.2f}", commands, calls.get("evalsha", 0), calls_made]))
PY
    tail -n 1 "$RAW" | awk -F'\t' '{ printf "  %-6s %-3s %8.0f req/s  p99 %s ms  redis calls/req %.3f  errors %s\n", $2, $3, $4 / $5, $8, $13 / $4, $6 }' >&2
}

log "$ROUNDS rounds: single and fleet alternating (order flipped each round), wrk then oha at $RATE req/s"
for ((r = 1; r <= ROUNDS; r++)); do
    order="single fleet"
    ((r % 2 == 0)) && order="fleet single"
    for kind in wrk lat; do
        for setup in $order; do measure "$r" "$setup" "$kind"; done
    done
done
for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "process $pid died during the run"; done

python3 - "$RAW" "$GIT_REV" "$RATE" "$CONNS" "$LAT_CONNS" "$DURATION" "$ROUNDS" >"$OUT" <<'PY'
import csv, statistics, sys, subprocess, datetime
raw, git, rate, conns, lat_conns, duration, rounds = sys.argv[1:]
rows = list(csv.DictReader(open(raw), delimiter="\t"))
for row in rows:
    for k in ("requests", "seconds", "errors", "p50_ms", "p99_ms", "proxy_cpu_s", "redis_cpu_s", "redis_commands", "evalsha", "redis_calls"):
        row[k] = float(row[k])
def pick(setup, kind): return sorted((r for r in rows if r["setup"] == setup and r["kind"] == kind), key=lambda r: r["round"])
med = statistics.median
rps = {s: [r["requests"] / r["seconds"] for r in pick(s, "wrk")] for s in ("single", "fleet")}
ratios = [f / s for f, s in zip(rps["fleet"], rps["single"])]
p99 = {s: [r["p99_ms"] for r in pick(s, "lat")] for s in ("single", "fleet")}
p50 = {s: [r["p50_ms"] for r in pick(s, "lat")] for s in ("single", "fleet")}
added = [f - s for f, s in zip(p99["fleet"], p99["single"])]
fleet_runs = pick("fleet", "wrk") + pick("fleet", "lat")
cmds = [r["redis_commands"] / r["requests"] for r in fleet_runs]
made = [r["redis_calls"] / r["requests"] for r in fleet_runs]
cpu = {s: [r["proxy_cpu_s"] * 1e6 / r["requests"] for r in pick(s, "wrk")] for s in ("single", "fleet")}
redis_cpu = [r["redis_cpu_s"] * 1e6 / r["requests"] for r in pick("fleet", "wrk")]
errors = int(sum(r["errors"] for r in rows))
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
span = lambda v, d=0: f"{med(v):,.{d}f} ({min(v):,.{d}f}–{max(v):,.{d}f})"
print("# sendgate fleet benchmark: latest results\n")
print(f"- Machine: {subprocess.getoutput('nproc')} CPUs, {cpu_model}; {subprocess.getoutput('redis-server --version').split(' sha')[0]}, appendfsync always")
print(f"- Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; sendgate at git {git} (release build)")
print(f"- {rounds} rounds, single and fleet alternating; wrk -t1 -c{conns} {duration} s; oha at {rate} req/s over {lat_conns} connections, latency-corrected")
print("- The send: BSUID-only, resolved to a known phone; number, pair and client limits on (reject). Median (min–max) over rounds.")
print(f"- Errors: {errors}\n")
print("| figure | single machine | fleet (Redis) | fleet ÷ single |")
print("|---|---:|---:|---:|")
print(f"| req/s (saturation) | {span(rps['single'])} | {span(rps['fleet'])} | {med(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |")
print(f"| p50 ms at {rate} req/s | {span(p50['single'], 3)} | {span(p50['fleet'], 3)} | |")
print(f"| p99 ms at {rate} req/s | {span(p99['single'], 3)} | {span(p99['fleet'], 3)} | added {span(added, 3)} |")
print(f"| proxy CPU µs/send | {span(cpu['single'], 1)} | {span(cpu['fleet'], 1)} | |")
print(f"| Redis calls per send (round trips) | 0 | {span(made, 3)} | |")
print(f"| commands Redis ran per send (inside scripts too) | | {span(cmds, 3)} | |")
print(f"| Redis CPU µs/send | | {span(redis_cpu, 1)} | |")
PY
cat "$OUT"
log "wrote $OUT"
