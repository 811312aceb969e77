#!/usr/bin/env bash
# bench/objects.sh: the object API benchmark (issue 3). Starts a three-master
# Flotilla on 127.0.0.1, runs `flotilla-bench objects` against it (pod
# creates, gets, lists, a fixed-rate run, watch delivery), stops it, then does
# the same with the same JSON bytes as raw puts/ranges/watches against a
# three-member etcd, and prints both systems side by side.
#
# Everything listens on 127.0.0.1 only. Every process this script starts, and
# its temporary directory, is removed on exit (also on failure or Ctrl-C).
set -euo pipefail

# One brace group ending in `exit`: bash parses all of it before running it.
{

usage() {
  cat <<'EOF'
Usage: bench/objects.sh [options]

  --quick              2 s points, 200/s fixed rate, 100 watchers (a smoke run)
  --only SYSTEM        run only "etcd" or "flotilla" (default: both)
  --secs S             seconds of each closed-loop point (default 10)
  --clients LIST       clients of the create and get points (default 1,16,256)
  --list-clients LIST  clients of the list points (default 1,16)
  --objects N          pods in the namespace that gets and lists read (default 1000)
  --rate R             creates per second of the fixed-rate point (default 1000)
  --rate-secs S        its duration (default 10)
  --watchers N         concurrent watchers (default 1000)
  --watch-rate R       writes per second while watched (default 50)
  --watch-secs S       how long the watch writer runs (default 10)
  --phases LIST        points to run, in order (default create,get,list,rate,watch)
  --base-port P        Flotilla client ports P, P+10000, P+20000, peers +1
                       (default 33379); etcd uses P+2000, P+2100, P+2200
  --results FILE       append the report here (default bench/RESULTS.md;
                       "-" to append nothing)
  --keep-logs DIR      copy the members' logs there before cleaning up
  --workdir DIR        parent of the temporary data directories
                       (default ${TMPDIR:-/tmp}); use a real disk, not tmpfs
  -h, --help           this text

Environment: FLOTILLA_BIN (default $CARGO_TARGET_DIR/release/flotilla),
BENCH_BIN (default $CARGO_TARGET_DIR/release/flotilla-bench), ETCD_BIN
(/usr/bin/etcd).
EOF
}

CMDLINE="$(printf '%q ' "$0" "$@")"
CMDLINE="${CMDLINE% }"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}"

ONLY=both
SECS=10
CLIENTS=1,16,256
LIST_CLIENTS=1,16
OBJECTS=1000
RATE=1000
RATE_SECS=10
WATCHERS=1000
WATCH_RATE=50
WATCH_SECS=10
PHASES=create,get,list,rate,watch
BASE_PORT=33379
RESULTS="$SCRIPT_DIR/RESULTS.md"
WORK_PARENT="${TMPDIR:-/tmp}"
KEEP_LOGS=""
QUICK=0

while (($#)); do
  case "$1" in
    --quick) QUICK=1; SECS=2; RATE=200; RATE_SECS=3; WATCHERS=100; WATCH_SECS=3 ;;
    --only) ONLY="${2:?--only needs etcd or flotilla}"; shift ;;
    --secs) SECS="${2:?}"; shift ;;
    --clients) CLIENTS="${2:?}"; shift ;;
    --list-clients) LIST_CLIENTS="${2:?}"; shift ;;
    --objects) OBJECTS="${2:?}"; shift ;;
    --rate) RATE="${2:?}"; shift ;;
    --rate-secs) RATE_SECS="${2:?}"; shift ;;
    --watchers) WATCHERS="${2:?}"; shift ;;
    --watch-rate) WATCH_RATE="${2:?}"; shift ;;
    --watch-secs) WATCH_SECS="${2:?}"; shift ;;
    --phases) PHASES="${2:?}"; shift ;;
    --base-port) BASE_PORT="${2:?}"; shift ;;
    --results) RESULTS="${2:?}"; shift ;;
    --workdir) WORK_PARENT="${2:?}"; shift ;;
    --keep-logs) KEEP_LOGS="${2:?}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "objects.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

case "$ONLY" in
  both) SYSTEMS="flotilla etcd" ;;
  etcd|flotilla) SYSTEMS="$ONLY" ;;
  *) echo "objects.sh: --only must be etcd, flotilla or both" >&2; exit 2 ;;
esac
((BASE_PORT >= 1024 && BASE_PORT + 20001 <= 65535)) || { echo "objects.sh: --base-port out of range" >&2; exit 2; }

# The settings both systems run with (ETCD_SETTINGS, FLOTILLA_SETTINGS).
# shellcheck source=bench/settings.sh
source "$SCRIPT_DIR/settings.sh"

FLOTILLA="${FLOTILLA_BIN:-$CARGO_TARGET_DIR/release/flotilla}"
BENCH="${BENCH_BIN:-$CARGO_TARGET_DIR/release/flotilla-bench}"
ETCD="${ETCD_BIN:-/usr/bin/etcd}"

log() { printf '[objects.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x "$BENCH" ]] || die "flotilla-bench not found at $BENCH (cargo build --release -p flotilla-bench)"
"$BENCH" objects --help >/dev/null 2>&1 || die "$BENCH has no 'objects' subcommand; rebuild it"
if [[ " $SYSTEMS " == *" flotilla "* ]]; then
  [[ -x "$FLOTILLA" ]] || die "flotilla binary not found at $FLOTILLA (cargo build --release -p flotilla)"
fi
if [[ " $SYSTEMS " == *" etcd "* ]]; then
  [[ -x "$ETCD" ]] || die "etcd not found at $ETCD (apt-get install etcd-server)"
fi

client_port() { # system i(1..3) -> port
  case "$1" in
    flotilla) echo $((BASE_PORT + 10000 * ($2 - 1))) ;;
    etcd) echo $((BASE_PORT + 2000 + 100 * ($2 - 1))) ;;
  esac
}
peer_port() { echo $(($(client_port "$1" "$2") + 1)); }
member_name() { case "$1" in etcd) echo "e$2" ;; flotilla) echo "m$2" ;; esac; }
system_ports() { # system -> its six ports
  local i
  for i in 1 2 3; do echo "$(client_port "$1" "$i") $(peer_port "$1" "$i")"; done
}

# Wait until no socket (listening, connected, or TIME-WAIT from an earlier
# run, which would make the members' bind fail) uses one of our ports.
wait_ports_free() { # system
  local end=$((SECONDS + 90)) p busy
  while :; do
    busy=""
    for p in $(system_ports "$1"); do
      if command -v ss >/dev/null; then
        if ss -Htan "( sport = :$p )" 2>/dev/null | grep -q .; then busy="$busy $p"; fi
      elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        busy="$busy $p"
      fi
    done
    [[ -z $busy ]] && return 0
    ((SECONDS < end)) || die "127.0.0.1 port(s)$busy still in use after 90 s; stop whatever uses them or pick another --base-port"
    sleep 1
  done
}

mkdir -p "$WORK_PARENT"
WORK="$(mktemp -d "$WORK_PARENT/flotilla-objects-bench.XXXXXX")"
OUT="$WORK/out"
LOGS="$WORK/logs"
mkdir -p "$OUT" "$LOGS"

# ---------------------------------------------------------------------------
# Processes and cleanup

declare -A PID=() # "system:i" -> pid
CHILD=""          # the load generator while it runs

# Signal a member only while its command line still names our work directory.
stop_pid() { # pid signal
  local pid=$1 sig=$2
  [[ -r /proc/$pid/cmdline ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WORK" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
}
alive() { [[ -e /proc/$1 ]] && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
wait_gone() { # pid secs
  local end=$((SECONDS + $2))
  while alive "$1"; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}

stop_system() { # system
  local i k
  for i in 1 2 3; do
    k="$1:$i"
    if [[ -n "${PID[$k]:-}" ]]; then stop_pid "${PID[$k]}" TERM; fi
  done
  for i in 1 2 3; do
    k="$1:$i"
    [[ -n "${PID[$k]:-}" ]] || continue
    if ! wait_gone "${PID[$k]}" 15; then
      log "$(member_name "$1" "$i") ignored SIGTERM for 15 s; SIGKILL"
      stop_pid "${PID[$k]}" KILL
      wait_gone "${PID[$k]}" 5 || true
    fi
    wait "${PID[$k]}" 2>/dev/null || true
    unset "PID[$k]"
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)); then
    log "failed (exit $rc); last lines of the member logs:"
    local f
    for f in "$LOGS"/*.log; do
      [[ -e $f ]] || continue
      echo "----- $f" >&2
      tail -n 10 "$f" >&2 || true
    done
  fi
  if [[ -n $CHILD && "$(awk '{print $4}' "/proc/$CHILD/stat" 2>/dev/null)" == "$$" ]]; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  local sys
  for sys in flotilla etcd; do stop_system "$sys"; done
  if [[ -n $KEEP_LOGS ]]; then
    mkdir -p "$KEEP_LOGS" && cp -r "$LOGS"/. "$KEEP_LOGS"/ && log "logs copied to $KEEP_LOGS" || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a command in the background and wait for it, so that a signal to this
# script takes effect at once (cleanup then kills $CHILD).
run_child() { # stdout-file command...
  local outf=$1 rc=0
  shift
  "$@" >"$outf" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

start_system() { # system
  local sys=$1 i name dir cp pp ic
  wait_ports_free "$sys"
  log "starting three $sys members"
  for i in 1 2 3; do
    name="$(member_name "$sys" "$i")"
    dir="$WORK/$sys/$name"
    cp="$(client_port "$sys" "$i")"
    pp="$(peer_port "$sys" "$i")"
    mkdir -p "$dir"
    case "$sys" in
      flotilla)
        ic="m1=127.0.0.1:$(peer_port flotilla 1),m2=127.0.0.1:$(peer_port flotilla 2),m3=127.0.0.1:$(peer_port flotilla 3)"
        "$FLOTILLA" master --name "$name" --data-dir "$dir" \
          --client-addr "127.0.0.1:$cp" --peer-addr "127.0.0.1:$pp" --initial-cluster "$ic" \
          "${FLOTILLA_SETTINGS[@]}" >>"$LOGS/$name.log" 2>&1 &
        ;;
      etcd)
        ic="e1=http://127.0.0.1:$(peer_port etcd 1),e2=http://127.0.0.1:$(peer_port etcd 2),e3=http://127.0.0.1:$(peer_port etcd 3)"
        "$ETCD" --name "$name" --data-dir "$dir" \
          --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
          --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
          --initial-cluster "$ic" --initial-cluster-token flotilla-objects-bench --initial-cluster-state new \
          --logger zap --log-outputs stderr "${ETCD_SETTINGS[@]}" \
          >>"$LOGS/$name.log" 2>&1 &
        ;;
    esac
    PID[$sys:$i]=$!
  done
  # Ready when all three agree on a leader and one write is acknowledged
  # (the object API's own readiness is waited for by `objects` itself).
  local end=$((SECONDS + 90))
  until "$BENCH" --endpoints "$(endpoints "$sys")" healthy >/dev/null 2>&1; do
    for i in 1 2 3; do alive "${PID[$sys:$i]}" || die "$(member_name "$sys" "$i") exited during start-up"; done
    ((SECONDS < end)) || die "$sys did not become healthy within 90 s"
    sleep 0.2
  done
  run_child /dev/null "$BENCH" --endpoints "$(endpoints "$sys")" until-write --timeout-secs 30 ||
    die "$sys does not accept writes"
  local leader
  leader="$("$BENCH" --endpoints "$(endpoints "$sys")" leader --wait-secs 10)" || die "$sys: no leader found"
  set_order "$sys" "$leader" || die "$sys: leader endpoint $leader is not one of ours"
  log "$sys is up (leader $leader; clients spread over members ${ORDER[$sys]})"
}

rss_kib() { # system -> summed VmRSS of the members
  local i t=0 v
  for i in 1 2 3; do
    v="$(awk '/^VmRSS:/ {print $2}' "/proc/${PID[$1:$i]}/status" 2>/dev/null || true)"
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

START_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
START_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
RUN_ID="ob$(date +%s)"
for sys in $SYSTEMS; do
  log "=== $sys ==="
  start_system "$sys"
  rc=0
  run_child "$OUT/$sys.jsonl" "$BENCH" --endpoints "$(endpoints "$sys")" objects --target "$sys" \
    --secs "$SECS" --clients "$CLIENTS" --list-clients "$LIST_CLIENTS" --objects "$OBJECTS" \
    --rate "$RATE" --rate-secs "$RATE_SECS" --watchers "$WATCHERS" --watch-rate "$WATCH_RATE" \
    --watch-secs "$WATCH_SECS" --phases "$PHASES" --run-id "$RUN_ID" || rc=$?
  cat "$OUT/$sys.jsonl" >&2
  ((rc == 0)) || die "flotilla-bench objects failed against $sys (exit $rc)"
  for i in 1 2 3; do alive "${PID[$sys:$i]}" || die "$(member_name "$sys" "$i") exited during the run"; done
  echo "{\"system\":\"$sys\",\"workload\":\"rss\",\"rss_kib\":$(rss_kib "$sys")}" >>"$OUT/$sys.jsonl"
  stop_system "$sys"
  rm -rf "${WORK:?}/$sys"
done

TABLES="$OUT/tables.md"
files=()
for sys in $SYSTEMS; do files+=("$OUT/$sys.jsonl"); done
"$BENCH" objects-report "${files[@]}" >"$TABLES"
echo
cat "$TABLES"
echo

if [[ $RESULTS != "-" ]]; then
  FLOTILLA_VERSION="$("$FLOTILLA" --version 2>/dev/null | head -n 1 || echo unknown)"
  ETCD_VERSION="$("$ETCD" --version 2>/dev/null | head -n 1 || echo unknown)"
  {
    echo
    echo "## Object API (issue 3): run of $START_DATE"
    echo
    echo "- Command: \`$CMDLINE\` (systems: $SYSTEMS; quick=$QUICK)"
    echo "- Machine: $(nproc) CPUs ($(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), data on $(df -T "$WORK_PARENT" | awk 'NR == 2 {print $2}'); the load generator shares the CPUs with the three members"
    echo "- Finished: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load average at start $START_LOAD, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Flotilla: $FLOTILLA_VERSION; etcd: $ETCD_VERSION; the same settings for both: \`${ETCD_SETTINGS[*]}\` (etcd), \`${FLOTILLA_SETTINGS[*]}\` (Flotilla), defaults otherwise; the object client makes one attempt per request, as the raw etcd client does"
    echo "- Points ($PHASES): ${SECS} s closed loop each; $OBJECTS pods read by gets and lists; fixed rate $RATE/s for ${RATE_SECS} s; $WATCHERS watchers, writer at $WATCH_RATE/s for ${WATCH_SECS} s"
    echo
    cat "$TABLES"
    echo
    echo "<details><summary>Raw measurements (JSON lines)</summary>"
    echo
    echo '```'
    for f in "${files[@]}"; do cat "$f"; done
    echo '```'
    echo
    echo "</details>"
  } >>"$RESULTS"
  log "appended to $RESULTS"
fi

exit 0
}
