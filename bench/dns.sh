#!/usr/bin/env bash
# Cluster DNS benchmark (issue 15): dnsperf (Debian's) against a Flotilla
# master's DNS and against Knot DNS (Debian's knot) serving the same
# records from a zone file, on this machine, in one run.
#   bench/dns.sh [SERVICES=10000] [SECONDS=10] [CLIENTS=4]
# With PERF_OUT=FILE, the master is profiled (Debian's linux-perf, perf
# record -g) during its peak run and perf's report is written to FILE.
# The same again with what pods' resolvers ask besides: AAAA (NODATA) and a
# search-path name that does not exist (NXDOMAIN). Then, against Flotilla only: dnsperf held at 80% of the peak it measured
# (-Q), the queries lost; and while that load runs, how long a service
# created (and then deleted) through the API takes to be answered (and to
# be gone), asked with dig every 10 ms.
# Needs: target-dir binaries (cargo build --release -p flotilla --bin flotilla -p flt),
# knot, dnsperf, dig, jq (scripts/install-deps). Prints Markdown tables.
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
FLT=("$T/flt" --server "127.0.0.1:$CP")
# No upstream: nothing leaves the machine.
master_pid=""
"$T/flotilla" master --name b1 --data-dir "$W/m" --client-addr 127.0.0.1:$CP \
    --peer-addr 127.0.0.1:$PP --initial-cluster b1=127.0.0.1:$PP \
    --dns-addr 127.0.0.1:$DP --dns-upstream 127.0.0.1:9 >"$W/master.log" 2>&1 &
master_pid=$!
pids+=($master_pid)
for _ in $(seq 100); do
    "${FLT[@]}" get ns default >/dev/null 2>&1 && break
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
apply_pids=()
for c in $(seq 0 7); do
    "${FLT[@]}" apply -f "$W/svc$c.yaml" >/dev/null &
    apply_pids+=($!)
done
for p in "${apply_pids[@]}"; do
    wait "$p" || { echo "creating services failed" >&2; exit 1; }
done
# Measure a settled cluster: the endpoints controller has written every
# service's EndpointSlice.
echo "waiting for $N endpoint slices..." >&2
for _ in $(seq 600); do
    s=$("${FLT[@]}" get endpointslices -n default -o json | jq '.items | length')
    ((s >= N)) && break
    sleep 1
done
# The zone Knot serves: the same A records, from the API.
"${FLT[@]}" get svc -n default -o json |
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
# What a pod's resolver asks for a service's full name: A, and AAAA
# (NODATA: the services are IPv4), and one name of the search path that
# does not exist (NXDOMAIN).
awk '{print $1, "A"; print $1, "AAAA"; print $1 "default.svc.cluster.local.", "A"}' "$W/records" |
    shuf --random-source=<(yes) >"$W/mixed"
count=$(wc -l <"$W/queries")
for _ in $(seq 100); do
    a=$(dig +short @127.0.0.1 -p "$DP" "svc$((N - 1)).default.svc.cluster.local" || true)
    k=$(dig +short @127.0.0.1 -p "$KP" "svc$((N - 1)).default.svc.cluster.local" || true)
    [[ -n $a && -n $k ]] && break
    sleep 0.2
done
# measure PORT [QUERIES]: dnsperf's output in $W/out; sets qps, lat, lost, codes.
measure() {
    dnsperf -s 127.0.0.1 -p "$1" -d "${2:-$W/queries}" -c "$CLIENTS" -l "$SECS" >"$W/out" 2>&1
    qps=$(sed -n 's/.*Queries per second: *\([0-9.]*\).*/\1/p' "$W/out")
    lat=$(sed -n 's/.*Average Latency (s): *\([0-9.]*\).*/\1/p' "$W/out")
    lat=$(awk "BEGIN{printf \"%.3f\", $lat*1000}")
    lost=$(sed -n 's/.*Queries lost: *\([0-9]*\) (\([0-9.]*%\)).*/\1 (\2)/p' "$W/out")
    codes=$(sed -n 's/.*Response codes: *\(.*\)/\1/p' "$W/out")
}
echo "| server | names | queries/s | avg latency ms | lost | response codes |"
echo "|---|---|---|---|---|---|"
if [[ -n ${PERF_OUT:-} ]]; then
    perf record -q -g -o "$W/perf.data" -p "$master_pid" -- sleep "$SECS" 2>/dev/null &
    perf_pid=$!
fi
measure "$DP"
if [[ -n ${PERF_OUT:-} ]]; then
    wait "$perf_pid" || true
    perf report -q -i "$W/perf.data" --stdio --no-children --sort comm,dso,sym 2>/dev/null |
        grep -v '^$' | grep '%' | head -40 >"$PERF_OUT" || true
fi
peak=${qps%.*}
echo "| Flotilla master DNS | $count | $qps | $lat | $lost | $codes |"
measure "$KP"
echo "| Knot $(knotd --version | awk '{print $NF}') | $count | $qps | $lat | $lost | $codes |"
mixed=$(wc -l <"$W/mixed")
measure "$DP" "$W/mixed"
echo "| Flotilla, A + AAAA (NODATA) + NXDOMAIN | $mixed | $qps | $lat | $lost | $codes |"
measure "$KP" "$W/mixed"
echo "| Knot, A + AAAA (NODATA) + NXDOMAIN | $mixed | $qps | $lat | $lost | $codes |"

# now_ms: wall clock in milliseconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# until_dns NAME WANT: dig every 10 ms until the answer (its +short
# output) is WANT ("" for none, i.e. NXDOMAIN); prints the milliseconds.
until_dns() {
    local start got
    start=$(now_ms)
    for _ in $(seq 1000); do
        got=$(dig +short +tries=1 +time=1 @127.0.0.1 -p "$DP" "$1" || true)
        [[ $got == "$2" ]] && { echo $(($(now_ms) - start)); return; }
        sleep 0.01
    done
    echo "never"
}
rate=$((peak * 8 / 10))
echo
echo "Flotilla at 80% of its peak (dnsperf -Q $rate), and service changes under that load:"
echo
dnsperf -s 127.0.0.1 -p "$DP" -d "$W/queries" -c "$CLIENTS" -l "$SECS" -Q "$rate" >"$W/load" 2>&1 &
load=$!
sleep 2
name=late.default.svc.cluster.local
t0=$(now_ms)
"${FLT[@]}" create service clusterip late --tcp=80:80 >/dev/null
api=$(($(now_ms) - t0))
ip=$("${FLT[@]}" get svc late -o json | jq -r .spec.clusterIP)
seen=$(until_dns "$name" "$ip")
t0=$(now_ms)
"${FLT[@]}" delete svc late >/dev/null
api_del=$(($(now_ms) - t0))
gone=$(until_dns "$name" "")
wait "$load"
qps=$(sed -n 's/.*Queries per second: *\([0-9.]*\).*/\1/p' "$W/load")
lost=$(sed -n 's/.*Queries lost: *\([0-9]*\) (\([0-9.]*%\)).*/\1 (\2)/p' "$W/load")
echo "| what | figure |"
echo "|---|---|"
echo "| queries/s sent at -Q $rate | $qps |"
echo "| lost | $lost |"
echo "| service created: flt create returned after | $api ms |"
echo "| ... then answered by DNS within | $seen ms |"
echo "| service deleted: flt delete returned after | $api_del ms |"
echo "| ... then NXDOMAIN within | $gone ms |"
