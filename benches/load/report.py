#!/usr/bin/env python3
"""Turns run.sh's raw measurements (one TSV row per measured run) into the
Markdown report. Usage: report.py RAW.tsv META.env > results.md"""

import csv
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load(raw_path, meta_path):
    with open(raw_path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        for key, value in row.items():
            if key not in ("scenario", "kind", "reference_for"):
                row[key] = float(value)
        # Raw files from before runs were paired have no such column.
        row["reference_for"] = row.get("reference_for") or ""
    meta = {}
    with open(meta_path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    return rows, meta


def workers_pinned():
    """Whether both of the benchmark's sendgate configs pin each worker to a
    CPU: the report names one setting for every sendgate row."""
    def pins(template):
        with open(os.path.join(HERE, template)) as f:
            return any(line.strip() == "worker_pin_cpus = true" for line in f)
    return all(pins(t) for t in ("sendgate-plain.toml.tmpl", "sendgate-limits.toml.tmpl"))


def med(values):
    return statistics.median(values) if values else math.nan


def spread(values):
    """(max - min) / median, in percent: how far apart the rounds were."""
    m = med(values)
    if not values or not m or math.isnan(m):
        return math.nan
    return (max(values) - min(values)) / abs(m) * 100


def fmt(x, digits=0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def cell(values, digits=0, pct=True):
    """median (min–max[, spread %])"""
    if not values:
        return "n/a"
    text = f"{fmt(med(values), digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)}"
    if pct:
        text += f", ±{fmt(spread(values) / 2, 1)}%"
    return text + ")"


def ratio(a, b):
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def paired_ratio(pairs, figure):
    """Median (min–max) over rounds of a run's figure over its paired nginx
    run's."""
    ratios = [figure(own) / figure(ref) for own, ref in pairs if figure(ref)]
    if not ratios:
        return "n/a"
    return f"{med(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def rps_of(run):
    return run["requests"] / run["seconds"]


def micros_per_request(run, key):
    """A CPU time column of a run, in µs per request."""
    return run[key] * 1e6 / run["requests"]


def proxy_cpu_of(run):
    return micros_per_request(run, "proxy_cpu_s")


def main():
    rows, meta = load(sys.argv[1], sys.argv[2])
    nproc = int(meta["nproc"])
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    # Keep the documented order where possible.
    order = ["direct", "nginx", "nginx-get", "hyper-floor", "sendgate-get", "sendgate-post", "sendgate-send-phone",
             "sendgate-send-rewrite", "sendgate-send-limits-warm"]
    scenarios.sort(key=lambda s: order.index(s) if s in order else len(order))

    def runs(s, kind):
        """Every run of scenario s, nginx's reference runs for others included."""
        return sorted((r for r in rows if r["scenario"] == s and r["kind"] == kind), key=lambda r: r["round"])

    def pairs(s):
        """(s's saturation run, its paired nginx run) per round: a scenario's
        own run is the one that is not a reference for another."""
        own = {r["round"]: r for r in rows if r["scenario"] == s and r["kind"] == "wrk" and not r["reference_for"]}
        refs = {r["round"]: r for r in rows if r["reference_for"] == s and r["kind"] == "wrk"}
        return [(own[k], refs[k]) for k in sorted(own) if k in refs]

    rps, cpu, cpu_lat, up_cpu, gen_cpu, lat, rate, errors, background = {}, {}, {}, {}, {}, {}, {}, {}, []
    switches = {}
    for s in scenarios:
        w, l = runs(s, "wrk"), runs(s, "lat")
        rps[s] = [rps_of(r) for r in w]
        # With no proxy in the way, direct's CPU column is the upstream's.
        cpu_key = "upstream_cpu_s" if s == "direct" else "proxy_cpu_s"
        cpu[s] = [micros_per_request(r, cpu_key) for r in w]
        cpu_lat[s] = [micros_per_request(r, cpu_key) for r in l]
        up_cpu[s] = [micros_per_request(r, "upstream_cpu_s") for r in w]
        gen_cpu[s] = [micros_per_request(r, "loadgen_cpu_s") for r in w]
        switches[s] = ([r["proxy_voluntary_switches"] / r["requests"] for r in w],
                       [r["proxy_involuntary_switches"] / r["requests"] for r in w])
        rate[s] = [rps_of(r) for r in l]
        lat[s] = {r["round"]: (r["p50_ms"], r["p99_ms"], r["p999_ms"]) for r in l}
        errors[s] = sum(r["status_errors"] + r["socket_errors"] for r in w + l)
        for r in w + l:
            ours = r["proxy_cpu_s"] + r["upstream_cpu_s"] + r["loadgen_cpu_s"]
            background.append(max(0.0, r["machine_busy_s"] - ours) / (r["seconds"] * nproc) * 100)

    def added(s, i):
        """Per round: scenario percentile minus direct's in the same round."""
        if "direct" not in lat:
            return []
        return [lat[s][k][i] - lat["direct"][k][i] for k in lat[s] if k in lat["direct"]]

    base = "nginx" if "nginx" in scenarios else None
    out = []
    p = out.append
    tool = meta["latency_tool"]
    if tool == "oha":
        lat_how = (f"oha, open loop at a fixed {meta['rate']} req/s over {meta['lat_conns']} keep-alive connections, "
                   f"`--latency-correction` (coordinated omission corrected)")
    else:
        lat_how = (f"**wrk fallback** ({meta['latency_note'] or 'LATENCY_TOOL=wrk'}): closed loop, "
                   f"{meta['lat_conns']} connections, no fixed rate, no coordinated-omission correction")
    p("# sendgate load benchmark: latest results")
    p("")
    p(f"- Machine: {meta['nproc']} CPUs, {meta['cpu']}, {meta['kernel']}")
    p(f"- Tools: {meta['nginx']}, {meta['wrk']}, {meta['oha']}, {meta['rustc']}")
    p(f"- Date: {meta['date']}; sendgate at git {meta['git']} (release build)")
    p(f"- Runs: {meta['rounds']} rounds, scenario order rotated each round; every run {meta['duration']} s after a "
      f"{meta['warmup']} s warm-up; process pinning: {'proxy on CPU 0, load generator and upstream on CPU 1' if meta['pin'] == '1' else 'none'}; "
      f"sendgate's workers: {'each on its own CPU (`worker_pin_cpus`)' if workers_pinned() else 'left to the scheduler'}")
    p(f"- Throughput: wrk -t1 -c{meta['conns']} (saturation). Latency: {lat_how}.")
    if any(r["reference_for"] for r in rows):
        p("- Ratios to nginx are paired: each saturation run of a proxy is followed (odd rounds) or preceded "
          "(even rounds) by an nginx run of the same kind of request (`nginx-get` for `sendgate-get`, `nginx` "
          "for the rest), and a ratio is the median (min–max) over rounds of the two runs' ratio. The nginx rows "
          "show all of nginx's runs, these included; rows without pairs are divided by the medians.")
    rps_spreads = [(spread(v), s) for s, v in rps.items() if len(v) > 1]
    p99_spreads = [(spread([x[1] for x in lat[s].values()]), s) for s in scenarios if len(lat[s]) > 1]
    if rps_spreads:
        worst = max(rps_spreads)
        worst99 = max(p99_spreads)
        p(f"- Noise across rounds (max−min over median): req/s median {fmt(med([x for x, _ in rps_spreads]), 1)}%, "
          f"worst {fmt(worst[0], 1)}% ({worst[1]}); p99 latency median {fmt(med([x for x, _ in p99_spreads]), 1)}%, "
          f"worst {fmt(worst99[0], 1)}% ({worst99[1]}). CPU used by processes other than the proxy, upstream and "
          f"load generator during measured runs: median {fmt(med(background), 1)}%, max {fmt(max(background), 1)}% "
          f"of the machine. Load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end.")
    bad = {s: n for s, n in errors.items() if n}
    if bad:
        p(f"- **Errors** (non-2xx or socket errors): " + ", ".join(f"{s}: {int(n)}" for s, n in bad.items()))
    else:
        p("- Errors: none (every response 2xx, no socket errors).")
    p(f"- Measurement time: {meta['bench_seconds']} s.")
    p("")
    p("| scenario | req/s median (min–max, ±half-spread) | req/s ÷ nginx | proxy CPU µs/req | CPU ÷ nginx "
      "| added p50 ms | added p99 ms | added p99.9 ms |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in scenarios:
        paired = pairs(s)

        def to_nginx(figures, figure):
            """From the pairs if s has them, else over the nginx row's median."""
            if paired:
                return paired_ratio(paired, figure)
            return ratio(med(figures[s]), med(figures[base])) if base else "n/a"

        rps_ratio = to_nginx(rps, rps_of)
        if s == "direct":
            cpu_cell = "upstream only: " + cell(cpu[s], 1, pct=False)
            cpu_ratio = "n/a"
        else:
            cpu_cell = cell(cpu[s], 1, pct=False)
            cpu_ratio = to_nginx(cpu, proxy_cpu_of)
        adds = [cell(added(s, i), 3, pct=False) if s != "direct" else "0 (baseline)" for i in range(3)]
        p(f"| {s} | {cell(rps[s])} | {rps_ratio} | {cpu_cell} | {cpu_ratio} | {adds[0]} | {adds[1]} | {adds[2]} |")
    p("")
    p("Detail: absolute latency at the fixed rate (median over rounds), the CPU the proxy spent per request at "
      "that rate, the upstream's and the load generator's CPU per request in the saturation runs (should be "
      "alike across rows), how often per request the proxy's threads were switched out in the saturation runs "
      "(voluntary: waiting for events; involuntary: preempted), and error counts.")
    p("")
    p("| scenario | achieved rate req/s | p50 ms | p99 ms | p99.9 ms | proxy CPU µs/req at fixed rate "
      "| upstream CPU µs/req (wrk) | wrk CPU µs/req | proxy switches/req vol. + invol. | errors |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    def switched(s):
        if s == "direct":
            return "n/a"
        voluntary, involuntary = switches[s]
        return f"{fmt(med(voluntary), 3)} + {fmt(med(involuntary), 3)}"

    for s in scenarios:
        pcts = [med([x[i] for x in lat[s].values()]) for i in range(3)]
        p(f"| {s} | {fmt(med(rate[s]))} | {fmt(pcts[0], 3)} | {fmt(pcts[1], 3)} | {fmt(pcts[2], 3)} | "
          f"{('upstream: ' if s == 'direct' else '') + fmt(med(cpu_lat[s]), 1)} | {fmt(med(up_cpu[s]), 1)} | "
          f"{fmt(med(gen_cpu[s]), 1)} | {switched(s)} | {int(errors[s])} |")
    p("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
