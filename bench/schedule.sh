#!/usr/bin/env bash
# bench/schedule.sh: the scheduler benchmark (issue 12), and with
# --workloads the workload controllers' one (issue 13: a Deployment's pods
# against the same pods created directly; bench/workloads.sh). Starts a
# three-master Flotilla on 127.0.0.1, runs `flotilla-bench schedule` against
# it (hollow nodes; pods created as fast as possible, then at a fixed rate;
# pods per second from creation to bound and its latency), stops it, and
# appends the JSON lines to bench/RESULTS.md.
#
# Everything listens on 127.0.0.1 only. Every process this script starts, and
# its temporary directory, is removed on exit (also on failure or Ctrl-C).
set -euo pipefail
{

usage() {
  cat <<'EOF'
Usage: bench/schedule.sh [options]

  --nodes LIST     node counts, increasing (default 500,5000)
  --pods N         pods per closed-loop point (default 10000)
  --clients N      concurrent creators (default 256)
  --rate R         pods per second offered at the open-loop point (default 500)
  --rate-secs S    its duration (default 10)
  --quick          --nodes 100,500 --pods 2000 --rate-secs 4 (a smoke run)
  --workloads      run `flotilla-bench workloads` instead: --nodes hollow
                   nodes (default 100), --pods pods per phase (default 3000)
  --base-port P    client ports P, P+10000, P+20000, peers +1 (default 34379)
  --results FILE   append the report here (default bench/RESULTS.md; "-": none)
  --workdir DIR    parent of the temporary data directories (default ${TMPDIR:-/tmp})
  -h, --help       this text

Environment: FLOTILLA_BIN (default $CARGO_TARGET_DIR/release/flotilla),
BENCH_BIN (default $CARGO_TARGET_DIR/release/flotilla-bench).
EOF
}

CMDLINE="$(printf '%q ' "$0" "$@")"
CMDLINE="${CMDLINE% }"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}"

NODES=500,5000
PODS=10000
CLIENTS=256
RATE=500
RATE_SECS=10
BASE_PORT=34379
RESULTS="$SCRIPT_DIR/RESULTS.md"
WORK_PARENT="${TMPDIR:-/tmp}"
WORKLOADS=0

while (($#)); do
  case "$1" in
    --nodes) NODES="${2:?}"; shift ;;
    --pods) PODS="${2:?}"; shift ;;
    --clients) CLIENTS="${2:?}"; shift ;;
    --rate) RATE="${2:?}"; shift ;;
    --rate-secs) RATE_SECS="${2:?}"; shift ;;
    --quick) NODES=100,500; PODS=2000; RATE_SECS=4 ;;
    --workloads) WORKLOADS=1 ;;
    --base-port) BASE_PORT="${2:?}"; shift ;;
    --results) RESULTS="${2:?}"; shift ;;
    --workdir) WORK_PARENT="${2:?}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "schedule.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if ((WORKLOADS)); then
  [[ $NODES == 500,5000 ]] && NODES=100
  [[ $PODS == 10000 ]] && PODS=3000
fi
FLOTILLA="${FLOTILLA_BIN:-$CARGO_TARGET_DIR/release/flotilla}"
BENCH="${BENCH_BIN:-$CARGO_TARGET_DIR/release/flotilla-bench}"
log() { printf '[schedule.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ -x "$FLOTILLA" ]] || die "flotilla not found at $FLOTILLA (cargo build --release -p flotilla)"
"$BENCH" schedule --help >/dev/null 2>&1 || die "$BENCH has no 'schedule' subcommand (cargo build --release -p flotilla-bench)"

port() { echo $((BASE_PORT + 10000 * ($1 - 1) + $2)); } # i(1..3) offset(0 client, 1 peer)
ENDPOINTS="127.0.0.1:$(port 1 0),127.0.0.1:$(port 2 0),127.0.0.1:$(port 3 0)"

mkdir -p "$WORK_PARENT"
WORK="$(mktemp -d "$WORK_PARENT/flotilla-schedule-bench.XXXXXX")"
declare -a PIDS=()

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$WORK"; then kill -TERM "$p" 2>/dev/null || true; fi
  done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if ((rc != 0)); then
    for f in "$WORK"/*.log; do [[ -e $f ]] && { echo "----- $f" >&2; tail -n 10 "$f" >&2; }; done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

IC="m1=127.0.0.1:$(port 1 1),m2=127.0.0.1:$(port 2 1),m3=127.0.0.1:$(port 3 1)"
for i in 1 2 3; do
  mkdir -p "$WORK/m$i"
  "$FLOTILLA" master --name "m$i" --data-dir "$WORK/m$i" --client-addr "127.0.0.1:$(port "$i" 0)" \
    --peer-addr "127.0.0.1:$(port "$i" 1)" --initial-cluster "$IC" \
    --controllers='*,-node-lifecycle-controller' >>"$WORK/m$i.log" 2>&1 &
  PIDS+=($!)
done
"$BENCH" --endpoints "$ENDPOINTS" healthy --wait-secs 90 >/dev/null || die "the masters did not become healthy"
"$BENCH" --endpoints "$ENDPOINTS" until-write --timeout-secs 30 >/dev/null || die "the masters do not accept writes"
log "three masters up; running"

START_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
START_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
OUT="$WORK/out.jsonl"
if ((WORKLOADS)); then
  TITLE="Workload controllers (issue 13): a Deployment against direct creates"
  "$BENCH" --endpoints "$ENDPOINTS" workloads --nodes "$NODES" --replicas "$PODS" --run-id "w$(date +%s)" | tee "$OUT"
else
  TITLE="Scheduler (issue 12)"
  "$BENCH" --endpoints "$ENDPOINTS" schedule --nodes "$NODES" --pods "$PODS" --clients "$CLIENTS" \
    --rate "$RATE" --rate-secs "$RATE_SECS" --run-id "s$(date +%s)" | tee "$OUT"
fi

if [[ $RESULTS != "-" ]]; then
  {
    echo
    echo "## $TITLE: run of $START_DATE"
    echo
    echo "- Command: \`$CMDLINE\`"
    echo "- Machine: $(nproc) CPUs, kernel $(uname -r); the three masters and the load generator share the CPUs"
    echo "- Finished: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load average at start $START_LOAD, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Hollow nodes: 32 cpu, 128Gi, 110 pods each, Ready (node lifecycle off: they send no heartbeats); pods request 100m and 128Mi"
    echo
    echo '```'
    cat "$OUT"
    echo '```'
  } >>"$RESULTS"
  log "appended to $RESULTS"
fi
exit 0
}
