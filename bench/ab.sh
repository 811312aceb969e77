#!/usr/bin/env bash
# A/B of two Flotilla builds' puts: each call starts a fresh three-master
# cluster of BIN on loopback (etcd's timing settings, as bench/run.sh
# gives both systems), runs `flotilla-bench put` at each client count, and
# prints one line per point: the label, the masters' CPU ticks (utime +
# stime, cumulative since the cluster started) and bytes written to
# storage (/proc/PID/io), then flotilla-bench's JSON line. Alternate the
# builds across calls (this machine is noisy) and compare CPU per put.
#
#   bench/ab.sh BIN LABEL CLIENTS...
#
# Environment: AB_TOTAL (puts per point; default run.sh's totals: 3,000 at
# 1 client, 20,000 at 16, 60,000 at 256, 80,000 otherwise), AB_SECS (cap
# per point, default 30), AB_KEEP (a folder to copy the masters' logs to,
# named LABEL-mN.log), BENCH_BIN (default
# $CARGO_TARGET_DIR/release/flotilla-bench).
set -euo pipefail
if (($# < 3)); then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
BIN=$1
LABEL=$2
shift 2
BENCH="${BENCH_BIN:-${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/release/flotilla-bench}"
W=$(mktemp -d /tmp/flotilla-ab.XXXXXX)
base=$((23000 + RANDOM % 2000))
ic="m1=127.0.0.1:$((base + 11)),m2=127.0.0.1:$((base + 12)),m3=127.0.0.1:$((base + 13))"
pids=()
cleanup() {
    if ((${#pids[@]})); then
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    if [[ -n "${AB_KEEP:-}" ]]; then
        mkdir -p "$AB_KEEP"
        for i in 1 2 3; do cp "$W/m$i.log" "$AB_KEEP/$LABEL-m$i.log" 2>/dev/null || true; done
    fi
    rm -rf "$W"
}
trap cleanup EXIT
for i in 1 2 3; do
    "$BIN" master --name "m$i" --data-dir "$W/m$i" \
        --client-addr "127.0.0.1:$((base + i))" --peer-addr "127.0.0.1:$((base + 10 + i))" \
        --initial-cluster "$ic" --heartbeat-interval-ms 100 --election-timeout-ms 1000 \
        --auto-compaction-retention 10000 >>"$W/m$i.log" 2>&1 &
    pids+=($!)
done
eps="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
healthy=0
for _ in $(seq 100); do
    if "$BENCH" --endpoints "$eps" healthy >/dev/null 2>&1; then
        healthy=1
        break
    fi
    sleep 0.2
done
if ((!healthy)); then
    echo "bench/ab.sh: the cluster of $BIN did not become healthy (logs: AB_KEEP)" >&2
    exit 1
fi
sum() { awk '{ s += $1 } END { print s }'; }
for c in "$@"; do
    case $c in
    1) t=3000 ;;
    16) t=20000 ;;
    256) t=60000 ;;
    *) t=80000 ;;
    esac
    t=${AB_TOTAL:-$t}
    out=$("$BENCH" --endpoints "$eps" put --clients "$c" --total "$t" --key-size 8 \
        --val-size 256 --max-secs "${AB_SECS:-30}" | head -1)
    cpu=$(for p in "${pids[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | sum)
    wb=$(for p in "${pids[@]}"; do awk '/^write_bytes/ {print $2}' "/proc/$p/io"; done | sum)
    echo "$LABEL c=$c cpu_ticks=$cpu write_bytes=$wb $out"
done
