# What the benchmark scripts share. All of them: logging, knob checks, an
# environment free of the caller's SENDGATE_* and RUST_LOG, and the tools
# they install. fleet.sh and tls.sh also: the release build, the temp dir and
# the processes they stop on exit, readiness waits, the wrk script of a send
# and CPU ticks.
# Sourced, not run:
#   BENCH=name; source "$HERE/lib.sh"

log() { printf '[%s %s] %s\n' "$BENCH" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
int_in() { # name value min max
    [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3 && $2 <= $4)) || die "$1=$2: want an integer in [$3, $4]"
}

# sendgate reads SENDGATE_* and RUST_LOG from the environment: keep the
# caller's out of the measurement.
for var in $(compgen -e); do
    case $var in SENDGATE_* | RUST_LOG) unset "$var" ;; esac
done
SUDO=""
[[ $(id -u) == 0 ]] || SUDO=sudo
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/sbin:/sbin"

need_tools() { # debian-package... -> installs the ones whose command is missing
    local missing=() tool
    for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if ((${#missing[@]})); then
        $SUDO apt-get update
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
    fi
}

# Builds sendgate (unless SKIP_BUILD=1), makes $TMP with a copy of the
# binary and the given subdirectories, and sets GIT_REV. Every pid added to
# PIDS is stopped on exit; the temp dir goes unless the run failed.
start_run() { # subdir...
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then (cd "$ROOT" && cargo build --release); fi
    TMP=$(mktemp -d "/tmp/sendgate-$BENCH.XXXXXX")
    local dir
    for dir in runs "$@"; do mkdir -p "$TMP/$dir"; done
    cp "$ROOT/target/release/sendgate" "$TMP/sendgate"
    GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -z $(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null) ]] || GIT_REV="$GIT_REV+dirty"
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $rc == 0 ]]; then rm -rf "$TMP"; else log "temp dir kept: $TMP"; fi
    exit "$rc"
}

wait_for() { # name pid command... -> returns once command succeeds (10 s at most), dies if pid exits first
    local name=$1 pid=$2 i
    shift 2
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at start (see $TMP)"
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$name did not answer: $*"
}

wait_url() { # name url pid [curl options...] -> returns once url answers, dies if pid exits first
    local name=$1 url=$2 pid=$3
    shift 3
    wait_for "$name" "$pid" curl -s -o /dev/null --max-time 1 "$@" "$url"
}

wrk_script() { # file body [extra-lua] -> a wrk script POSTing body as a send, printing RESULT at the end
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.body = [==[$2]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token"
${3:-}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d\n", summary.requests, summary.duration,
    e.status + e.connect + e.read + e.write + e.timeout))
end
LUA
}

ticks() { # pid... -> utime+stime of all their threads, in clock ticks
    local total=0 s pid
    for pid in "$@"; do
        s=$(<"/proc/$pid/stat")
        s=${s##*) }
        # shellcheck disable=SC2086
        set -- $s
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}
TCK=$(getconf CLK_TCK)
