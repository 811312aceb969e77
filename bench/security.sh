#!/usr/bin/env bash
# bench/security.sh: what TLS and authorization cost (issue 16). Runs the
# same three-master Flotilla twice per round, on the same ports: once in
# plaintext without authorization (loopback, AlwaysAllow), once with TLS on
# the client and peer ports, client certificates required and RBAC on, the
# load generator calling as a user bound to cluster-admin through a
# ClusterRoleBinding (so every call is authorized through RBAC, not waved
# through as system:masters). Each round measures etcd API puts and object
# API pod creates at the same client counts and prints both side by side.
#
# Everything listens on 127.0.0.1 only. Every process this script starts,
# and its temporary directory, is removed on exit (also on failure).
set -euo pipefail

{

usage() {
  cat <<'EOF'
Usage: bench/security.sh [options]

  --rounds N        rounds; each runs every mode once, in order (default 2)
  --modes LIST      of plain (no TLS, AlwaysAllow), tls (TLS + RBAC) and
                    tls-allow (TLS, AlwaysAllow: TLS's share of the cost);
                    default plain,tls
  --total N         puts per put point (default 20000)
  --clients LIST    clients of the put and create points (default 16,256)
  --secs S          seconds of each create point (default 10)
  --base-port P     client ports P, P+10000, P+20000; peers +1 (default 34379)
  --results FILE    append the report here (default bench/RESULTS.md; - for none)
  --workdir DIR     parent of the temporary data directories (default $TMPDIR or /tmp)
  -h, --help        this text

Environment: FLOTILLA_BIN, FLT_BIN, BENCH_BIN (default $CARGO_TARGET_DIR/release/...).
EOF
}

CMDLINE="$(printf '%q ' "$0" "$@")"
CMDLINE="${CMDLINE% }"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}"

ROUNDS=2
MODES=plain,tls
TOTAL=20000
CLIENTS=16,256
SECS=10
BASE_PORT=34379
RESULTS="$SCRIPT_DIR/RESULTS.md"
WORK_PARENT="${TMPDIR:-/tmp}"

while (($#)); do
  case "$1" in
    --rounds) ROUNDS="${2:?}"; shift ;;
    --modes) MODES="${2:?}"; shift ;;
    --total) TOTAL="${2:?}"; shift ;;
    --clients) CLIENTS="${2:?}"; shift ;;
    --secs) SECS="${2:?}"; shift ;;
    --base-port) BASE_PORT="${2:?}"; shift ;;
    --results) RESULTS="${2:?}"; shift ;;
    --workdir) WORK_PARENT="${2:?}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "security.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

FLOTILLA="${FLOTILLA_BIN:-$CARGO_TARGET_DIR/release/flotilla}"
FLT="${FLT_BIN:-$CARGO_TARGET_DIR/release/flt}"
BENCH="${BENCH_BIN:-$CARGO_TARGET_DIR/release/flotilla-bench}"
log() { printf '[security.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for b in "$FLOTILLA" "$FLT" "$BENCH"; do
  [[ -x $b ]] || die "$b is missing (cargo build --release -p flotilla -p flt -p flotilla-bench)"
done
"$BENCH" --help | grep -q -- --cacert || die "$BENCH has no --cacert; rebuild it"

mkdir -p "$WORK_PARENT"
WORK="$(mktemp -d "$WORK_PARENT/flotilla-security-bench.XXXXXX")"
OUT="$WORK/out"
PKI="$WORK/pki"
mkdir -p "$OUT" "$PKI"
PIDS=()

port() { echo $((BASE_PORT + 10000 * ($1 - 1))); }
ENDPOINTS="127.0.0.1:$(port 1),127.0.0.1:$(port 2),127.0.0.1:$(port 3)"
CLUSTER="m1=127.0.0.1:$(($(port 1) + 1)),m2=127.0.0.1:$(($(port 2) + 1)),m3=127.0.0.1:$(($(port 3) + 1))"

stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    local end=$((SECONDS + 15))
    while kill -0 "$p" 2>/dev/null && ((SECONDS < end)); do sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PIDS=()
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)); then
    local f
    for f in "$WORK"/*.log; do [[ -e $f ]] && { echo "----- $f" >&2; tail -n 10 "$f" >&2; }; done
  fi
  stop_all
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One CA for clients and peers; each master serves its client and peer
# ports with one certificate (both usages).
"$FLOTILLA" certs ca --dir "$PKI" >/dev/null
for i in 1 2 3; do
  "$FLOTILLA" certs issue --dir "$PKI" --name "m$i" --common-name "system:master:m$i" \
    --org system:masters --san 127.0.0.1 --usage both >/dev/null
done
"$FLOTILLA" certs issue --dir "$PKI" --name admin --common-name admin --org system:masters >/dev/null
"$FLOTILLA" certs issue --dir "$PKI" --name bench --common-name bench >/dev/null
TLS_BENCH=(--cacert "$PKI/ca.crt" --cert "$PKI/bench.crt" --key "$PKI/bench.key")

start() { # mode
  local i args
  for i in 1 2 3; do
    args=(master --name "m$i" --data-dir "$WORK/$1/m$i" --client-addr "127.0.0.1:$(port "$i")"
      --peer-addr "127.0.0.1:$(($(port "$i") + 1))" --initial-cluster "$CLUSTER")
    if [[ $1 == tls* ]]; then
      args+=(--cert-file "$PKI/m$i.crt" --key-file "$PKI/m$i.key" --trusted-ca-file "$PKI/ca.crt"
        --client-cert-auth --peer-cert-file "$PKI/m$i.crt" --peer-key-file "$PKI/m$i.key"
        --peer-trusted-ca-file "$PKI/ca.crt")
    fi
    [[ $1 == tls-allow ]] && args+=(--authorization-mode AlwaysAllow)
    "$FLOTILLA" "${args[@]}" >>"$WORK/$1-m$i.log" 2>&1 &
    PIDS+=($!)
  done
  local bench_tls=()
  [[ $1 == tls* ]] && bench_tls=("${TLS_BENCH[@]}")
  if [[ $1 == tls ]]; then
    cat >"$WORK/binding.yaml" <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bench}
subjects: [{kind: User, name: bench, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: cluster-admin, apiGroup: rbac.authorization.k8s.io}
EOF
    local end=$((SECONDS + 90))
    until "$FLT" --server "$ENDPOINTS" --certificate-authority "$PKI/ca.crt" \
      --client-certificate "$PKI/admin.crt" --client-key "$PKI/admin.key" \
      apply -f "$WORK/binding.yaml" >/dev/null 2>&1; do
      ((SECONDS < end)) || die "the TLS cluster took no ClusterRoleBinding within 90 s"
      sleep 0.2
    done
  fi
  local end=$((SECONDS + 90))
  until "$BENCH" --endpoints "$ENDPOINTS" "${bench_tls[@]}" healthy >/dev/null 2>&1; do
    ((SECONDS < end)) || die "the $1 cluster did not become healthy within 90 s"
    sleep 0.2
  done
  "$BENCH" --endpoints "$ENDPOINTS" "${bench_tls[@]}" until-write --timeout-secs 30 >/dev/null ||
    die "the $1 cluster does not accept writes"
  log "$1 cluster up"
}

START_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
START_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  IFS=, read -ra modes <<<"$MODES"
  for mode in "${modes[@]}"; do
    case "$mode" in plain|tls|tls-allow) ;; *) die "unknown mode $mode" ;; esac
    start "$mode"
    bench_tls=()
    [[ $mode == tls* ]] && bench_tls=("${TLS_BENCH[@]}")
    IFS=, read -ra cs <<<"$CLIENTS"
    for c in "${cs[@]}"; do
      "$BENCH" --endpoints "$ENDPOINTS" "${bench_tls[@]}" put --total "$TOTAL" --clients "$c" |
        sed "s/^{/{\"mode\":\"$mode\",\"round\":$round,/" >>"$OUT/points.jsonl"
    done
    "$BENCH" --endpoints "$ENDPOINTS" "${bench_tls[@]}" objects --target flotilla --phases create \
      --clients "$CLIENTS" --secs "$SECS" --run-id "sec$round$mode$(date +%s)" |
      grep '"workload":"create"' |
      sed "s/^{/{\"mode\":\"$mode\",\"round\":$round,/" >>"$OUT/points.jsonl"
    stop_all
    rm -rf "${WORK:?}/$mode"
  done
done

TABLE="$(python3 - "$OUT/points.jsonl" <<'PY'
import json, sys
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
pts = defaultdict(lambda: defaultdict(list))
for r in rows:
    pts[(r["workload"], r["clients"])][r["mode"]].append(r)
modes = [m for m in ["plain", "tls-allow", "tls"] if any(r["mode"] == m for r in rows)]
title = {"plain": "plaintext", "tls-allow": "TLS, AlwaysAllow", "tls": "TLS + RBAC"}
head = " | ".join(f"{title[m]} ops/s (p99 ms)" for m in modes)
print(f"| point | clients | {head} | errors |")
print("|---|---" + "|---" * len(modes) + "|---|")
med = lambda xs: sorted(xs)[len(xs) // 2]
for (wl, c), m in sorted(pts.items()):
    name = {"put": "etcd API put", "create": "object API pod create"}.get(wl, wl)
    base = med([r["throughput"] for r in m["plain"]]) if m["plain"] else None
    cells = []
    for mode in modes:
        t = med([r["throughput"] for r in m[mode]])
        p99 = med([r["p99_ms"] or 0 for r in m[mode]])
        ratio = f", {t / base:.2f}x" if base and mode != "plain" else ""
        cells.append(f"{t:,.0f} ({p99:.1f}{ratio})")
    err = sum(r["errors"] for mode in modes for r in m[mode])
    print(f"| {name} | {c} | {' | '.join(cells)} | {err} |")
PY
)"
echo
echo "$TABLE"
if [[ $RESULTS != "-" ]]; then
  {
    echo
    echo "## TLS and authorization cost (issue 16): run of $START_DATE"
    echo
    echo "- Command: \`$CMDLINE\` ($ROUNDS rounds of $MODES; medians over rounds; ratios against plaintext)"
    echo "- Machine: $(nproc) CPUs, load average at start $START_LOAD, at end $(cut -d' ' -f1-3 /proc/loadavg); the load generator shares the CPUs"
    echo "- Plaintext: three masters on loopback, no credentials (AlwaysAllow). TLS + RBAC: the same with --cert-file/--key-file/--trusted-ca-file/--client-cert-auth and --peer-* (TLS between masters too); the load generator presents a certificate for user \`bench\`, bound to cluster-admin by a ClusterRoleBinding"
    echo
    echo "$TABLE"
    echo
    echo "<details><summary>Raw points (JSON lines)</summary>"
    echo
    echo '```'
    cat "$OUT/points.jsonl"
    echo '```'
    echo
    echo "</details>"
  } >>"$RESULTS"
  log "appended to $RESULTS"
fi
exit 0
}
