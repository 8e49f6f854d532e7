#!/usr/bin/env python3
"""Connection costs of a reverse proxy, for conns.sh (see README.md beside it).

Standard library only (Python 3.11). Subcommands:

  upstream  --ports P0,P1,... --delays D0,D1,...
      A slow HTTP/1.1 upstream on 127.0.0.1: one listener per port, each
      answering every request, after its delay in seconds, with the JSON a
      Cloud API text send returns (200, content-length, keep-alive).

  idle      --port P --pid PID --n N --out FILE
      N keep-alive connections (opened --open-concurrency at a time), each
      sends one request and reads the answer, then all stay open and idle;
      proxy RSS before and after --settle seconds.

  inflight  --port P --pid PID --n M --out FILE
      M fresh connections, opened first (--open-concurrency at a time), then
      M sends written at once; proxy RSS sampled every 100 ms (in a thread)
      while they wait for the slow upstream, the peak kept.

  burst     --port P --pid PID --n B --out FILE
      B tasks created at once, each opens a new connection and makes one
      send: time until every connect completed, response times (just before
      connect to the full response), status codes, and the kernel's TcpExt
      listen-overflow and SYN-retransmission counters over the burst.

  report    --dir RESULTS --meta META.env --out FILE
      The Markdown table of nginx and sendgate side by side.

RSS is the sum of VmRSS of PID and all its descendants (nginx: master and
worker), found after the warm-up requests. Every socket operation and every
scenario has a timeout.
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import threading
import time

NUMBER = "106540352242922"
SEND_PATH = f"/v21.0/{NUMBER}/messages"
SEND_BODY = b'{"messaging_product":"whatsapp","to":"16315551234","type":"text","text":{"body":"hi"}}'
UPSTREAM_BODY = (
    b'{"messaging_product":"whatsapp","contacts":[{"input":"16315551234","wa_id":"16315551234"}],'
    b'"messages":[{"id":"wamid.X"}]}'
)
UPSTREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(UPSTREAM_BODY)).encode() + b"\r\n"
    b"connection: keep-alive\r\n"
    b"\r\n" + UPSTREAM_BODY
)
MAX_HEAD = 64 * 1024


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def log(msg):
    print(f"[conns.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- HTTP/1.1 framing (just what the benchmark needs) ------------------------


def parse_head(head: bytes):
    """-> (start line, {lower-case name: value})"""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def read_body(reader: asyncio.StreamReader, headers: dict):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # trailers, up to the empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            await reader.readexactly(size + 2)
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, headers = parse_head(head)
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"bad status line {status_line!r}")
    await read_body(reader, headers)
    return int(parts[1])


def send_request(port: int) -> bytes:
    return (
        f"POST {SEND_PATH} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\n"
        f"content-length: {len(SEND_BODY)}\r\n"
        f"\r\n"
    ).encode() + SEND_BODY


# ---- upstream ------------------------------------------------------------------


class UpstreamConnection(asyncio.Protocol):
    """One upstream connection: reads a request (head, then a content-length
    or chunked body), answers it after the delay, keeps the connection.
    A protocol rather than streams, so that thousands of connections cost
    little CPU beside the proxy under test."""

    def __init__(self, delay: float):
        self.delay = delay
        self.buf = bytearray()
        self.transport = None
        self.end = None  # where the current request ends in buf, once its head is read
        self.chunked = False
        self.close_after = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while True:
            if self.end is None:
                i = self.buf.find(b"\r\n\r\n")
                if i < 0:
                    if len(self.buf) > MAX_HEAD:
                        self.transport.abort()
                    return
                try:
                    _, headers = parse_head(bytes(self.buf[: i + 4]))
                    length = int(headers.get("content-length", "0"))
                except ValueError:
                    self.transport.abort()
                    return
                self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
                self.close_after = "close" in headers.get("connection", "").lower()
                self.end = i + 4 + (0 if self.chunked else length)
            if self.chunked:  # the body ends with the last chunk and no trailers
                j = self.buf.find(b"0\r\n\r\n", self.end)
                if j < 0:
                    return
                done = j + 5
            elif len(self.buf) >= self.end:
                done = self.end
            else:
                return
            del self.buf[:done]
            self.end = None
            close = self.close_after
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self.respond, close)
            else:
                self.respond(close)

    def respond(self, close):
        if self.transport.is_closing():
            return
        self.transport.write(UPSTREAM_RESPONSE)
        if close:
            self.transport.close()


async def upstream_main(args):
    hard = raise_nofile()
    ports = [int(p) for p in args.ports.split(",")]
    delays = [float(d) for d in args.delays.split(",")]
    if len(ports) != len(delays):
        sys.exit("--ports and --delays must have the same length")
    loop = asyncio.get_running_loop()
    servers = []
    for port, delay in zip(ports, delays):
        servers.append(await loop.create_server(
            lambda delay=delay: UpstreamConnection(delay), "127.0.0.1", port,
            backlog=args.backlog, reuse_address=True))
    log(f"upstream listening on 127.0.0.1 ports {ports} with delays {delays} s "
        f"(backlog {args.backlog}, RLIMIT_NOFILE {hard})")
    await asyncio.gather(*(s.serve_forever() for s in servers))


# ---- the proxy's memory --------------------------------------------------------


class ProxyGone(Exception):
    pass


def proc_tree(root: int):
    """root and all its descendants, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree = [root]
    i = 0
    while i < len(tree):
        tree.extend(sorted(children.get(tree[i], [])))
        i += 1
    return tree


def rss_kib(pids) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
                else:  # a zombie has no VmRSS
                    raise ProxyGone(f"process {pid} has no VmRSS (exited?)")
        except FileNotFoundError:
            raise ProxyGone(f"process {pid} is gone") from None
    return total


class Sampler(threading.Thread):
    """RSS of pids every interval seconds, in a thread so that a busy event
    loop does not delay the samples."""

    def __init__(self, pids, interval=0.1):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.samples = []  # (perf_counter, KiB)
        self.error = None
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            try:
                self.samples.append((time.perf_counter(), rss_kib(self.pids)))
            except ProxyGone as e:
                self.error = str(e)
                return
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join(5)


# ---- client helpers ------------------------------------------------------------


def error_name(e: BaseException) -> str:
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(e, asyncio.IncompleteReadError):
        return "eof"
    return type(e).__name__


def count(names):
    out = {}
    for n in names:
        out[n] = out.get(n, 0) + 1
    return out


# asyncio.timeout rather than wait_for: no extra task per operation, which
# matters when thousands of connections start at once.
async def connect(port, timeout):
    async with asyncio.timeout(timeout):
        return await asyncio.open_connection("127.0.0.1", port, limit=MAX_HEAD)


async def exchange(reader, writer, request, timeout) -> int:
    async with asyncio.timeout(timeout):
        writer.write(request)
        await writer.drain()
        return await read_response(reader)


def close_all(writers):
    for w in writers:
        try:
            w.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


async def warm_up(args, request):
    """A few sends on their own connections before the baseline, so that the
    proxy's one-time allocations (first upstream connections, lazy state) are
    not counted as per-connection cost. Concurrent, so one upstream delay."""
    async def one():
        r, w = await connect(args.port, args.connect_timeout)
        try:
            return await exchange(r, w, request, args.io_timeout)
        finally:
            w.close()

    statuses = await asyncio.gather(*(one() for _ in range(args.warmup)), return_exceptions=True)
    bad = [s for s in statuses if s != 200]
    if bad:
        raise RuntimeError(f"warm-up sends did not all answer 200: {bad!r}")
    await asyncio.sleep(0.5)


def write_result(args, result):
    result.update(scenario=args.cmd, port=args.port, pid=args.pid, n=args.n)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    log(f"{args.cmd}: " + ", ".join(f"{k}={v}" for k, v in result.items()
                                    if k not in ("samples", "response_ms_sorted")))


# ---- scenario 1: idle keep-alive connections -----------------------------------


async def idle_main(args):
    request = send_request(args.port)
    await warm_up(args, request)
    pids = proc_tree(args.pid)
    before = rss_kib(pids)
    sem = asyncio.Semaphore(args.open_concurrency)

    async def one():
        async with sem:
            r, w = await connect(args.port, args.connect_timeout)
            try:
                status = await exchange(r, w, request, args.io_timeout)
            except BaseException:
                w.close()
                raise
            return r, w, status

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(args.n)), return_exceptions=True)
    opened_s = time.perf_counter() - t0
    conns = [x for x in results if not isinstance(x, BaseException)]
    errors = count(error_name(x) for x in results if isinstance(x, BaseException))
    await asyncio.sleep(args.settle)
    after = rss_kib(pids)
    still_open = sum(1 for r, w, _ in conns if not r.at_eof() and not w.is_closing())
    ok = sum(1 for _, _, s in conns if s == 200)
    close_all(w for _, w, _ in conns)
    await asyncio.sleep(0.2)
    write_result(args, {
        "pids": pids, "rss_before_kib": before, "rss_after_kib": after,
        "per_conn_kib": (after - before) / args.n, "ok_200": ok, "answered": len(conns),
        "still_open": still_open, "errors": errors, "open_seconds": round(opened_s, 3),
    })


# ---- scenario 2: in-flight sends -----------------------------------------------


async def inflight_main(args):
    request = send_request(args.port)
    await warm_up(args, request)
    pids = proc_tree(args.pid)
    baseline = rss_kib(pids)
    sampler = Sampler(pids, args.sample_interval)
    sampler.start()
    try:
        # Open the connections first, a few at a time (below any listen
        # backlog), so that a slow accept does not spread the sends over time:
        # then every send is in flight at once.
        sem = asyncio.Semaphore(args.open_concurrency)

        async def open_one():
            async with sem:
                return await connect(args.port, args.connect_timeout)

        t0 = time.perf_counter()
        opened = await asyncio.gather(*(open_one() for _ in range(args.n)), return_exceptions=True)
        t_open = time.perf_counter()
        conns = [x for x in opened if not isinstance(x, BaseException)]
        errors = [error_name(x) for x in opened if isinstance(x, BaseException)]
        rss_connected = rss_kib(pids)

        async def send(r, w):
            try:
                return await exchange(r, w, request, args.io_timeout)
            finally:
                w.close()

        t_send = time.perf_counter()
        results = await asyncio.gather(*(send(r, w) for r, w in conns), return_exceptions=True)
        t_done = time.perf_counter()
    finally:
        sampler.stop()
    if sampler.error:
        raise ProxyGone(sampler.error)
    errors += [error_name(x) for x in results if isinstance(x, BaseException)]
    statuses = count(str(x) for x in results if not isinstance(x, BaseException))
    wait = [k for t, k in sampler.samples if t_send <= t <= t_done]
    peak = max(wait or [k for _, k in sampler.samples])
    write_result(args, {
        "pids": pids, "rss_baseline_kib": baseline, "rss_connected_kib": rss_connected,
        "rss_peak_kib": peak, "per_send_kib": (peak - baseline) / args.n,
        "ok_200": statuses.get("200", 0), "statuses": statuses, "errors": count(errors),
        "open_seconds": round(t_open - t0, 3), "all_answered_seconds": round(t_done - t_send, 3),
        "samples_during_wait": len(wait),
    })


# ---- scenario 3: burst of new connections --------------------------------------


def percentile(sorted_values, p):
    """nearest rank"""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPReqQFullDoCookies", "TCPReqQFullDrop")


def tcp_counters():
    """TcpExt counters of this network namespace (the whole machine's, not
    only the proxy's: other work's connections count too)."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
            return {k: table[k] for k in TCP_COUNTERS if k in table}
    return {}


async def burst_main(args):
    request = send_request(args.port)
    await warm_up(args, request)
    pids = proc_tree(args.pid)
    starts = []

    async def one(t0):
        start = time.perf_counter()
        starts.append(start - t0)
        connected = None
        try:
            r, w = await connect(args.port, args.connect_timeout)
            connected = time.perf_counter()
            try:
                status = await exchange(r, w, request, args.io_timeout)
            finally:
                w.close()
            return {"connected": connected - t0, "response": time.perf_counter() - start, "status": status}
        except Exception as e:  # noqa: BLE001 - recorded, not raised
            return {"connected": None if connected is None else connected - t0, "error": error_name(e)}

    counters0 = tcp_counters()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one(t0)) for _ in range(args.n)]
    results = await asyncio.gather(*tasks)
    total = time.perf_counter() - t0
    counters1 = tcp_counters()
    rss_kib(pids)  # raises if the proxy died under the burst
    connected = [x["connected"] for x in results if x["connected"] is not None]
    responses = sorted(x["response"] * 1e3 for x in results if "response" in x)
    statuses = count(str(x["status"]) for x in results if "status" in x)
    write_result(args, {
        "pids": pids, "connected": len(connected),
        "all_accepted_seconds": round(max(connected), 4) if len(connected) == args.n else None,
        "last_accepted_seconds": round(max(connected), 4) if connected else None,
        "p50_ms": round(percentile(responses, 50), 1) if responses else None,
        "p99_ms": round(percentile(responses, 99), 1) if responses else None,
        "max_ms": round(responses[-1], 1) if responses else None,
        "ok_200": statuses.get("200", 0), "statuses": statuses,
        "errors": count(x["error"] for x in results if "error" in x),
        "total_seconds": round(total, 3),
        # when the client started its last connect: the floor under all_accepted_seconds
        "last_connect_started_seconds": round(max(starts), 4),
        "tcp": {k: counters1[k] - counters0.get(k, 0) for k in counters1},
    })


async def client_main(args):
    hard = raise_nofile()
    if hard < args.n + 100:
        log(f"WARNING: RLIMIT_NOFILE hard limit {hard} is below {args.n} connections + 100")
    scenario = {"idle": idle_main, "inflight": inflight_main, "burst": burst_main}[args.cmd]
    await asyncio.wait_for(scenario(args), args.scenario_timeout)


# ---- report ----------------------------------------------------------------------


def report_main(args):
    meta = {}
    with open(args.meta) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    proxies = ["nginx", "sendgate"]
    res = {}
    for p in proxies:
        for s in ["idle", "inflight", "burst"]:
            path = os.path.join(args.dir, f"{p}-{s}.json")
            try:
                with open(path) as f:
                    res[p, s] = json.load(f)
            except (OSError, ValueError):
                res[p, s] = None
    fails = {}
    ffile = os.path.join(args.dir, "failures.txt")
    if os.path.exists(ffile):
        with open(ffile) as f:
            for line in f:
                p, s, why = line.rstrip("\n").split("\t", 2)
                fails[p, s] = why

    def num(p, s, key):
        r = res[p, s]
        return None if r is None else r.get(key)

    def fmt(v, digits):
        return "failed" if v is None else f"{v:,.{digits}f}"

    def ratio(a, b, digits=1):
        if a is None or b is None or b == 0:
            return "—"
        return f"{a / b:.{digits}f}×"

    n_idle, n_inf, n_burst = int(meta["idle_n"]), int(meta["inflight_n"]), int(meta["burst_n"])
    rows = []

    def metric(label, s, key, digits, scale=1.0, with_ratio=True):
        vals = [num(p, s, key) for p in proxies]
        vals = [None if v is None else v * scale for v in vals]
        rows.append([label] + [fmt(v, digits) for v in vals] + [ratio(vals[1], vals[0]) if with_ratio else "—"])

    def tcp(label, keys):
        cells = []
        for p in proxies:
            t = num(p, "burst", "tcp")
            cells.append("—" if not t else " / ".join(f"{t.get(k, 0):,}" for k in keys))
        rows.append([label] + cells + ["—"])

    def counts(label, s, key, n, extra=None):
        cells = []
        for p in proxies:
            r = res[p, s]
            if r is None:
                cells.append("failed")
                continue
            cell = f"{r[key]:,} / {n:,}"
            if extra:
                cell += extra(r)
            cells.append(cell)
        rows.append([label] + cells + ["—"])

    metric("RSS at rest before the idle connections (MiB)", "idle", "rss_before_kib", 1, 1 / 1024)
    metric(f"RSS per idle keep-alive connection (KiB), {n_idle:,} connections", "idle", "per_conn_kib", 2)
    counts("idle: answered 200 / still open after settling", "idle", "ok_200", n_idle,
           lambda r: f", {r['still_open']:,} open")
    metric(f"RSS per in-flight send (KiB), {n_inf:,} at once, upstream {meta['inflight_delay']} s",
           "inflight", "per_send_kib", 2)
    counts("in-flight: answered 200", "inflight", "ok_200", n_inf)
    metric(f"burst: time until all {n_burst:,} connections accepted (s)", "burst", "all_accepted_seconds", 3)
    metric("burst: time until the client had started every connect (s)", "burst",
           "last_connect_started_seconds", 3, with_ratio=False)
    tcp("burst: listen queue overflows / SYN retransmissions (kernel, whole machine)",
        ["ListenOverflows", "TCPSynRetrans"])
    metric(f"burst: response time p50 (ms), upstream {meta['burst_delay']} s", "burst", "p50_ms", 0)
    metric("burst: response time p99 (ms)", "burst", "p99_ms", 0)
    counts("burst: answered 200", "burst", "ok_200", n_burst)

    checks = []
    for p in proxies:
        for s, n in [("idle", n_idle), ("inflight", n_inf), ("burst", n_burst)]:
            r = res[p, s]
            if r is None:
                checks.append(f"{p} {s}: no result ({fails.get((p, s), 'unknown failure')})")
                continue
            problems = []
            if r["ok_200"] != n:
                problems.append(f"{r['ok_200']:,} of {n:,} answered 200")
            if s == "idle" and r["still_open"] != r["answered"]:
                problems.append(f"{r['answered'] - r['still_open']:,} connections closed while idle")
            if s == "burst" and r["connected"] != n:
                problems.append(f"{r['connected']:,} of {n:,} connected")
            other = {k: v for k, v in r.get("statuses", {}).items() if k != "200"}
            if other:
                problems.append("statuses " + ", ".join(f"{k}: {v}" for k, v in sorted(other.items())))
            if r.get("errors"):
                problems.append("errors " + ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())))
            if problems:
                checks.append(f"{p} {s}: " + "; ".join(problems))
    for p in proxies:
        if meta.get(f"{p}_log"):
            checks.append(f"{p} logged: {meta[f'{p}_log']}")

    out = []
    out.append("# Connections at scale: nginx vs sendgate (conns.sh)")
    out.append("")
    out.append(f"- machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['kernel']}, "
               f"load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']}")
    out.append(f"- {meta['nginx']} (1 worker, worker_connections 20000, "
               f"worker_rlimit_nofile {meta['nginx_nofile']}); sendgate at git {meta['git']}; {meta['python']}")
    out.append(f"- date: {meta['date']}; measured in {meta['seconds']} s")
    out.append(f"- parameters: idle N={n_idle:,} (upstream {meta['idle_delay']} s, settle {meta['settle']} s), "
               f"in-flight M={n_inf:,} (upstream {meta['inflight_delay']} s), "
               f"burst B={n_burst:,} (upstream {meta['burst_delay']} s); "
               f"idle and in-flight connections opened {meta['open_concurrency']} at a time; "
               f"{meta['warmup']} warm-up sends per scenario; proxy restarted per scenario")
    out.append(f"- RSS: sum of VmRSS of the proxy's processes (nginx master + worker, sendgate's one process); "
               f"RLIMIT_NOFILE {meta['nofile']}, net.core.somaxconn {meta['somaxconn']}")
    d = None
    try:
        with open(os.path.join(args.dir, "direct-burst.json")) as f:
            d = json.load(f)
    except (OSError, ValueError):
        pass
    if d:
        acc = d["all_accepted_seconds"]
        out.append(f"- harness floor, the same burst straight to the upstream (no proxy): all accepted after "
                   f"{'—' if acc is None else f'{acc:.3f}'} s (client had started every connect after "
                   f"{d['last_connect_started_seconds']:.3f} s), response p50 {d['p50_ms']:,.0f} ms, "
                   f"p99 {d['p99_ms']:,.0f} ms, {d['ok_200']:,} / {n_burst:,} answered 200")
    else:
        out.append("- harness floor (burst straight to the upstream): failed")
    out.append("")
    out.append("| metric | nginx | sendgate | sendgate÷nginx |")
    out.append("|---|---:|---:|---:|")
    for row in rows:
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    if checks:
        out.append("**Checks failed:**")
        out.append("")
        out.extend(f"- {c}" for c in checks)
    else:
        out.append("Checks: every send answered 200, every idle connection stayed open, nothing logged.")
    text = "\n".join(out) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


# ---- main ------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upstream")
    up.add_argument("--ports", required=True)
    up.add_argument("--delays", required=True)
    up.add_argument("--backlog", type=int, default=4096)
    for name in ("idle", "inflight", "burst"):
        c = sub.add_parser(name)
        c.add_argument("--port", type=int, required=True)
        c.add_argument("--pid", type=int, required=True, help="the proxy's (master) process")
        c.add_argument("--n", type=int, required=True)
        c.add_argument("--out", required=True)
        c.add_argument("--warmup", type=int, default=4)
        c.add_argument("--open-concurrency", type=int, default=100)
        c.add_argument("--settle", type=float, default=2.0)
        c.add_argument("--sample-interval", type=float, default=0.1)
        c.add_argument("--connect-timeout", type=float, default=60)
        c.add_argument("--io-timeout", type=float, default=60)
        c.add_argument("--scenario-timeout", type=float, default=150)
    rep = sub.add_parser("report")
    rep.add_argument("--dir", required=True)
    rep.add_argument("--meta", required=True)
    rep.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.cmd == "upstream":
        try:
            asyncio.run(upstream_main(args))
        except KeyboardInterrupt:
            pass
    elif args.cmd == "report":
        report_main(args)
    else:
        try:
            asyncio.run(client_main(args))
        except ProxyGone as e:
            sys.exit(f"{args.cmd}: the proxy died: {e}")
        except (asyncio.TimeoutError, TimeoutError):
            sys.exit(f"{args.cmd}: scenario did not finish within {args.scenario_timeout} s")


if __name__ == "__main__":
    main()
