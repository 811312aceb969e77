#!/usr/bin/env bash
# Cluster DNS benchmark (issue 15): dnsperf (Debian's) against a Flotilla
# master's DNS and against Knot DNS (Debian's knot) serving the same
# records from a zone file, on this machine, in one run.
#   bench/dns.sh [SERVICES=10000] [SECONDS=10] [CLIENTS=4]
# Needs: target-dir binaries (cargo build --release -p flotilla --bin flotilla --bin flt),
# knot, dnsperf, jq (scripts/install-deps). Prints a Markdown table.
set -euo pipefail
N=${1:-10000}
SECS=${2:-10}
CLIENTS=${3:-4}
T=${CARGO_TARGET_DIR:-target}/release
W=$(mktemp -d /tmp/flotilla-dnsbench-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
CP=$(port); PP=$(port); DP=$(port); KP=$(port)
"$T/flotilla" master --name b1 --data-dir "$W/m" --client-addr 127.0.0.1:$CP \
    --peer-addr 127.0.0.1:$PP --initial-cluster b1=127.0.0.1:$PP \
    --dns-addr 127.0.0.1:$DP >"$W/master.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    "$T/flt" --server 127.0.0.1:$CP get ns default >/dev/null 2>&1 && break
    sleep 0.2
done
echo "creating $N services..." >&2
python3 - "$N" "$W" <<'PY'
import sys
n, w = int(sys.argv[1]), sys.argv[2]
chunks = 8
for c in range(chunks):
    with open(f"{w}/svc{c}.yaml", "w") as f:
        for i in range(c, n, chunks):
            f.write(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: default}}\n"
                    f"spec: {{selector: {{app: a{i}}}, ports: [{{name: http, port: 80}}]}}\n")
PY
for c in $(seq 0 7); do
    "$T/flt" --server 127.0.0.1:$CP apply -f "$W/svc$c.yaml" >/dev/null &
done
wait_apply=0
for j in $(jobs -p); do
    case " ${pids[*]} " in *" $j "*) ;; *) wait "$j" || wait_apply=1 ;; esac
done
((wait_apply == 0)) || { echo "creating services failed" >&2; exit 1; }
# The zone Knot serves: the same A records, from the API.
"$T/flt" --server 127.0.0.1:$CP get svc -n default -o json |
    jq -r '.items[] | "\(.metadata.name).default.svc.cluster.local. 5 IN A \(.spec.clusterIP)"' >"$W/records"
{
    echo '$ORIGIN cluster.local.'
    echo '@ 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30'
    echo '@ 30 IN NS ns.dns.cluster.local.'
    echo 'ns.dns 5 IN A 10.96.0.10'
    cat "$W/records"
} >"$W/cluster.local.zone"
mkdir -p "$W/knot"
cat >"$W/knot.conf" <<CONF
server:
  listen: 127.0.0.1@$KP
  rundir: $W/knot
database:
  storage: $W/knot
zone:
  - domain: cluster.local
    file: $W/cluster.local.zone
CONF
knotd -c "$W/knot.conf" >"$W/knot.log" 2>&1 &
pids+=($!)
awk '{print $1, "A"}' "$W/records" | shuf --random-source=<(yes) >"$W/queries"
count=$(wc -l <"$W/queries")
for _ in $(seq 100); do
    a=$(dig +short @127.0.0.1 -p "$DP" "svc$((N - 1)).default.svc.cluster.local" || true)
    k=$(dig +short @127.0.0.1 -p "$KP" "svc$((N - 1)).default.svc.cluster.local" || true)
    [[ -n $a && -n $k ]] && break
    sleep 0.2
done
run() { # NAME PORT
    local out
    out=$(dnsperf -s 127.0.0.1 -p "$2" -d "$W/queries" -c "$CLIENTS" -l "$SECS" 2>&1)
    local qps lat lost
    qps=$(sed -n 's/.*Queries per second: *\([0-9.]*\).*/\1/p' <<<"$out")
    lat=$(sed -n 's/.*Average Latency (s): *\([0-9.]*\).*/\1/p' <<<"$out")
    lost=$(sed -n 's/.*Queries lost: *\([0-9]*\) (\([0-9.]*%\)).*/\1 (\2)/p' <<<"$out")
    printf '| %s | %s | %s | %.3f | %s |\n' "$1" "$count" "$qps" "$(awk "BEGIN{print $lat*1000}")" "$lost"
}
echo "| server | names | queries/s | avg latency ms | lost |"
echo "|---|---|---|---|---|"
run "Flotilla master DNS" "$DP"
run "Knot $(knotd --version | awk '{print $NF}')" "$KP"
