#!/usr/bin/env bash
# Memory of sendgate at scale (issue 5): resident memory while a 200 MB body
# streams through it, and with 10,000 concurrent client connections open.
# Loopback only; every wait is bounded. Usage: bash benches/load/scale.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BODY_MB=${BODY_MB:-200}
CONNECTIONS=${CONNECTIONS:-10000}
UPORT=${UPORT:-19181}
SPORT=${SPORT:-19180}

command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
(cd "$REPO" && cargo build --release --quiet)

TMP="$(mktemp -d "${TMPDIR:-/tmp}/sendgate-scale.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f $TMP/nginx.pid ]] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
# Each side holds one descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# An upstream that reads and discards any body and answers like the Cloud API.
mkdir -p "$TMP/ng"
cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/ng/body; proxy_temp_path $TMP/ng/proxy;
  fastcgi_temp_path $TMP/ng/fcgi; uwsgi_temp_path $TMP/ng/uwsgi; scgi_temp_path $TMP/ng/scgi;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$UPORT;
    default_type application/json;
    location / { return 200 '{"id":"media-1"}'; }
  }
}
CONF
nginx -c "$TMP/nginx.conf" -p "$TMP/ng/"

cat >"$TMP/sendgate.toml" <<CONF
listen = "127.0.0.1:$SPORT"
upstream = "http://127.0.0.1:$UPORT"
[store]
path = ""
[admin]
listen = ""
[log]
level = "warn"
CONF
"$REPO/target/release/sendgate" serve --config "$TMP/sendgate.toml" >"$TMP/sendgate.log" 2>&1 &
SG=$!
PIDS+=("$SG")
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$SPORT/v21.0/1" && break
    sleep 0.1
done

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$SG/status"; }

# 1. A large body streamed through a passthrough route.
head -c "${BODY_MB}M" /dev/zero >"$TMP/body"
BEFORE=$(rss_kib)
PEAK=$BEFORE
timeout 300 curl -s -o /dev/null -w '%{http_code} %{size_upload}\n' -X POST -T "$TMP/body" \
    -H 'content-type: application/octet-stream' "http://127.0.0.1:$SPORT/v21.0/1/media" >"$TMP/upload.out" &
UP=$!
while kill -0 "$UP" 2>/dev/null; do
    now=$(rss_kib)
    ((now > PEAK)) && PEAK=$now
    sleep 0.02
done
wait "$UP"
read -r CODE SENT <"$TMP/upload.out"
echo "stream: HTTP $CODE, $((SENT / 1048576)) MiB uploaded through sendgate; RSS before $((BEFORE / 1024)) MiB, peak $((PEAK / 1024)) MiB, growth $(((PEAK - BEFORE) / 1024)) MiB ($((PEAK - BEFORE)) KiB)"

# 2. Many concurrent client connections, each having made one request.
BEFORE=$(rss_kib)
python3 - "$SPORT" "$CONNECTIONS" "$SG" <<'PY'
import socket, sys, time
port, count, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
request = b"GET /v21.0/1 HTTP/1.1\r\nHost: sendgate\r\n\r\n"
socks = []
deadline = time.time() + 120
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(request)
    socks.append(s)
answered = 0
for s in socks:
    if time.time() > deadline:
        break
    data = s.recv(4096)
    answered += data.startswith(b"HTTP/1.1 200")
print(f"connections: {len(socks)} open, {answered} answered 200, sendgate RSS {rss() // 1024} MiB", flush=True)
for s in socks:
    s.close()
PY
AFTER=$(rss_kib)
echo "connections: RSS before $((BEFORE / 1024)) MiB; after closing them all $((AFTER / 1024)) MiB"
