#!/usr/bin/env bash
# A/B of two Flotilla builds' puts: each call starts a fresh three-master
# cluster of BIN on loopback (bench/settings.sh's settings, as bench/run.sh
# gives both systems), runs `flotilla-bench put` at each client count, and
# prints one line per point: the label, the masters' CPU ticks (utime +
# stime, cumulative since the cluster started) and bytes written to
# storage (/proc/PID/io), then flotilla-bench's JSON line. Alternate the
# builds across calls (this machine is noisy) and compare CPU per put.
#
#   bench/ab.sh BIN LABEL CLIENTS...
#
# Environment: AB_TOTAL (puts per point; default run.sh's totals,
# settings.sh's put_total), AB_SECS (cap per point, default 30), AB_KEEP
# (a folder to copy the masters' logs to, named LABEL-mN.log), BENCH_BIN
# (default $CARGO_TARGET_DIR/release/flotilla-bench).
set -euo pipefail
if (($# < 3)); then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
BIN=$1
LABEL=$2
shift 2
# shellcheck source=bench/settings.sh
source "$(dirname "$0")/settings.sh"
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
        --initial-cluster "$ic" "${FLOTILLA_SETTINGS[@]}" >>"$W/m$i.log" 2>&1 &
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
    t=${AB_TOTAL:-$(put_total "$c")}
    out=$("$BENCH" --endpoints "$eps" put --clients "$c" --total "$t" --key-size "$KEY_SIZE" \
        --val-size "$VAL_SIZE" --max-secs "${AB_SECS:-30}" | head -1)
    cpu=$(for p in "${pids[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | sum)
    wb=$(for p in "${pids[@]}"; do awk '/^write_bytes/ {print $2}' "/proc/$p/io"; done | sum)
    echo "$LABEL c=$c cpu_ticks=$cpu write_bytes=$wb $out"
done
