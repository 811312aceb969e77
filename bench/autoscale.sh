#!/usr/bin/env bash
# bench/autoscale.sh: the cluster autoscaler's scale-up latency (issue 18).
# Runs `flotilla up --autoscale 1:N` with the local provider (hollow agents
# by default) and the default 10 s scan, then, round after round, creates a
# pod that fits no node there is (it asks for 60% of a node's CPU, and each
# node already holds one such pod) and measures, from its creation: the
# scale-up decision (the pool's status.targetSize grows), the new node
# Ready, and the pod Running. Prints one JSON line per round and appends
# them to bench/RESULTS.md. With --runtime cri the pods are real containers:
# the script runs Debian's docker-registry on loopback, pushes the test
# images there (scripts/images) and gives it to the agents as the mirror of
# registry.k8s.io and docker.io.
#
# Everything listens on 127.0.0.1 only. Every process this script starts, and
# its temporary directory, is removed on exit (also on failure or Ctrl-C).
set -euo pipefail
{

usage() {
  cat <<'EOF'
Usage: bench/autoscale.sh [options]

  --rounds N       scale-ups measured (default 5; the pool's max is N+1)
  --runtime R      agents' runtime: fake (default, hollow nodes) or cri
  --scan D         --scan-interval of the autoscaler (default 10s)
  --base-port P    flotilla up's --base-port (default 36379)
  --results FILE   append the report here (default bench/RESULTS.md; "-": none)
  --workdir DIR    parent of the temporary data directory (default ${TMPDIR:-/tmp})
  -h, --help       this text

Environment: FLOTILLA_BIN (default $CARGO_TARGET_DIR/release/flotilla),
FLT_BIN (default $CARGO_TARGET_DIR/release/flt). Needs root and jq.
EOF
}

CMDLINE="$(printf '%q ' "$0" "$@")"
CMDLINE="${CMDLINE% }"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}"

ROUNDS=5
RUNTIME=fake
SCAN=10s
BASE_PORT=36379
RESULTS="$SCRIPT_DIR/RESULTS.md"
WORK_PARENT="${TMPDIR:-/tmp}"

while (($#)); do
  case "$1" in
    --rounds) ROUNDS="${2:?}"; shift ;;
    --runtime) RUNTIME="${2:?}"; shift ;;
    --scan) SCAN="${2:?}"; shift ;;
    --base-port) BASE_PORT="${2:?}"; shift ;;
    --results) RESULTS="${2:?}"; shift ;;
    --workdir) WORK_PARENT="${2:?}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

FLOTILLA="${FLOTILLA_BIN:-$CARGO_TARGET_DIR/release/flotilla}"
FLT="${FLT_BIN:-$CARGO_TARGET_DIR/release/flt}"
log() { echo "[autoscale] $*" >&2; }
die() { log "$*"; exit 1; }
[[ -x $FLOTILLA && -x $FLT ]] || die "build first: cargo build --release -p flotilla -p flt"
command -v jq >/dev/null || die "jq is missing (apt-get install jq)"

mkdir -p "$WORK_PARENT"
WORK="$(mktemp -d "$WORK_PARENT/flotilla-autoscale-bench.XXXXXX")"
UP_PID=""
REG_PID=""
NETNS_BEFORE="$(ip netns list 2>/dev/null | awk '{print $1}')"
BRIDGE_BEFORE="$(ip link show flotilla-up0 2>/dev/null || true)"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $UP_PID ]]; then
    # up's agents leave their pods running for the next start to adopt:
    # delete them first, while the agents can stop their containers.
    if [[ $RUNTIME == cri && -e $WORK/data/flt.yaml ]]; then
      flt delete pods --all -n default >/dev/null 2>&1 || true
      wait_until 60 no_pods || log "pods still there after 60 s; killing their containers"
    fi
    kill -INT "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
  # Whatever containers are left (a failed run): their shims, their
  # processes, their mounts under the work folder.
  local s
  for s in $(pgrep -f "containerd-shim.*-address $WORK/" || true); do
    pkill -KILL -P "$s" 2>/dev/null || true
    kill -KILL "$s" 2>/dev/null || true
  done
  awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  if [[ -z $BRIDGE_BEFORE ]]; then ip link delete flotilla-up0 2>/dev/null || true; fi
  if [[ -n $REG_PID ]]; then
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
  fi
  if ((rc != 0)); then
    [[ -e $WORK/up.log ]] && { echo "----- up.log" >&2; tail -n 20 "$WORK/up.log" >&2; }
  fi
  # The namespaces of the autoscaled agents this run made (slots 100..).
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^flotilla-up-a1[0-9][0-9]$/ {print $1}'); do
    grep -qxF "$ns" <<<"$NETNS_BEFORE" || ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
flt() { FLT_CONFIG="$WORK/data/flt.yaml" "$FLT" "$@"; }

MIRRORS=()
if [[ $RUNTIME == cri ]]; then
  # The agents live in namespaces of their own on up's bridge: the
  # registry listens on the bridge's host address, once up has made it.
  command -v docker-registry >/dev/null || die "docker-registry is missing (scripts/install-deps)"
  REG_ADDR="172.30.0.1:$((BASE_PORT + 90))"
  MIRRORS=(--registry-mirror "registry.k8s.io=http://$REG_ADDR"
    --registry-mirror "docker.io=http://$REG_ADDR")
fi
start_registry() {
  printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: "%s"}\n' \
    "$WORK/registry" "$REG_ADDR" >"$WORK/registry.yml"
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  wait_until 20 curl -fsS "http://$REG_ADDR/v2/" >/dev/null || die "the registry did not start"
  "$REPO_DIR/scripts/images" --push "$REG_ADDR" >&2 || die "could not push the test images"
}

"$FLOTILLA" up --data-dir "$WORK/data" --base-port "$BASE_PORT" --agents 0 --proxy-mode none \
  --autoscale "1:$((ROUNDS + 1))" --autoscale-runtime "$RUNTIME" --scan-interval "$SCAN" "${MIRRORS[@]}" \
  >"$WORK/up.out" 2>"$WORK/up.log" &
UP_PID=$!

wait_until() { # TIMEOUT_S CMD...: poll CMD every 50 ms
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" 2>/dev/null; do
    (( $(date +%s) < deadline )) || return 1
    sleep 0.05
  done
}
ready_nodes() { flt get nodes -o json | jq '[.items[] | select(.status.conditions[]? | .type == "Ready" and .status == "True")] | length'; }
has_ready() { [[ "$(ready_nodes)" -ge $1 ]]; }
target() { flt get nodepool default -o jsonpath='{.status.targetSize}'; }
grown() { [[ "$(target)" -ge $1 ]]; }
running() { [[ "$(flt get pod "$1" -o jsonpath='{.status.phase}')" == Running ]]; }
no_pods() { [[ "$(flt get pods -n default -o json | jq '.items | length')" == 0 ]]; }

wait_until 120 test -e "$WORK/data/flt.yaml" || die "flotilla up did not start"
if [[ $RUNTIME == cri ]]; then
  wait_until 60 sh -c "ip -4 addr show dev flotilla-up0 | grep -q 172.30.0.1/" || die "no bridge flotilla-up0"
  start_registry
fi
wait_until 120 has_ready 1 || die "the pool did not reach its min size"
CPU="$(flt get nodes -o json | jq -r '.items[0].status.allocatable.cpu')"
MILLI="$(awk -v c="$CPU" 'BEGIN { if (c ~ /m$/) { sub(/m$/, "", c); print int(c) } else print int(c * 1000) }')"
REQ="$((MILLI * 6 / 10))m"
log "pool at its min size; node cpu $CPU, each pod asks $REQ"

START_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
START_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
OUT="$WORK/out.jsonl"
pod() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: registry.k8s.io/pause:3.6, resources: {requests: {cpu: "$REQ", memory: 16Mi}}}]
EOF
}
# The first pod fills the min-size node; every later one needs a node of its own.
pod p0 | flt apply -f - >/dev/null
wait_until 60 running p0 || die "p0 did not run"
for i in $(seq 1 "$ROUNDS"); do
  t0="$(now)"
  pod "p$i" | flt apply -f - >/dev/null
  wait_until 120 grown "$((i + 1))" || die "round $i: no scale-up decision"
  t_decided="$(now)"
  wait_until 120 has_ready "$((i + 1))" || die "round $i: no new Ready node"
  t_ready="$(now)"
  wait_until 120 running "p$i" || die "round $i: the pod is not Running"
  t_run="$(now)"
  printf '{"bench":"autoscale","round":%d,"runtime":"%s","scan":"%s","decision_s":%s,"node_ready_s":%s,"pod_running_s":%s}\n' \
    "$i" "$RUNTIME" "$SCAN" "$(since "$t0" "$t_decided")" "$(since "$t0" "$t_ready")" "$(since "$t0" "$t_run")" | tee -a "$OUT"
done
SUMMARY="$(jq -s -c '{bench:"autoscale-summary", rounds:length,
  decision_max_s:(map(.decision_s)|max), node_ready_max_s:(map(.node_ready_s)|max),
  pod_running_max_s:(map(.pod_running_s)|max),
  pod_running_mean_s:((map(.pod_running_s)|add)/length*1000|round/1000)}' "$OUT")"
echo "$SUMMARY" | tee -a "$OUT"

if [[ $RESULTS != "-" ]]; then
  {
    echo
    echo "## Cluster autoscaler (issue 18): run of $START_DATE"
    echo
    echo "- Command: \`$CMDLINE\`"
    echo "- Machine: $(nproc) CPUs, kernel $(uname -r); the three masters, the agents and flt share the CPUs"
    echo "- Finished: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load average at start $START_LOAD, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Flotilla at commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?'); times from the pod's creation, polled with flt every 50 ms"
    echo
    echo '```'
    cat "$OUT"
    echo '```'
  } >>"$RESULTS"
  log "appended to $RESULTS"
fi
exit 0
}
