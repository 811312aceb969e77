#!/usr/bin/env bash
# bench/proxy.sh: the node proxy benchmarks (issue 14), side by side in one
# run, printed as Markdown for bench/RESULTS.md.
#
# 1. Short HTTP requests with wrk, keep-alive and a new connection per
#    request, from a client namespace through a node namespace to a "pod"
#    namespace whose server is HAProxy answering 200 itself (a fast server,
#    so the path is measured): direct to the pod IP, to a cluster IP in
#    iptables, nftables and userspace modes, and to HAProxy in TCP
#    mode on the node (the userspace anchor). The proxy modes run through
#    proxy/examples/dataplane.rs (the crate's own rules, writer and
#    listeners, one service, no cluster).
# 2. Rule sync at 1,000/5,000/10,000 services x 2 endpoints in a fresh
#    namespace: iptables mode with each iptables backend (legacy ip_tables
#    and nf_tables), and nftables mode: one full sync, then the median and
#    worst of five syncs that change one endpoint (rendering, diffing and
#    the restore or `nft -f`, which returns when the rule is live).
#
# Needs root, wrk, haproxy, iptables, nft. Namespaces are named fpb-<pid>-*,
# addresses are in 10.251.0.0/16, nothing is routed off the machine; all
# is removed on exit (also on failure or Ctrl-C).
set -euo pipefail

DUR=${DUR:-5}
# SYNC=0 skips part 2; ROWS=REGEX runs only the matching part-1 rows;
# WRK_OUT=1 prints wrk's full output to stderr.
SYNC=${SYNC:-1}
ROWS=${ROWS:-.}
WRK_OUT=${WRK_OUT:-0}
CONNS=${CONNS:-32}
BIN=${DATAPLANE_BIN:-${CARGO_TARGET_DIR:-target}/release/examples/dataplane}
[[ -x $BIN ]] || { echo "build it: cargo build --release -p flotilla-proxy --example dataplane" >&2; exit 1; }
id=fpb-$$
C=$id-c N=$id-n P=$id-p S=$id-s
tmp=$(mktemp -d)
pids=()
stop() { kill -INT "$1" 2>/dev/null || true; timeout 5 tail --pid="$1" -f /dev/null || kill -KILL "$1" 2>/dev/null || true; }
cleanup() {
  for p in "${pids[@]}"; do stop "$p"; done
  for ns in $C $N $P $S; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
nsr() { local ns=$1; shift; nsenter --net=/run/netns/"$ns" "$@"; }

for ns in $C $N $P $S; do ip netns add "$ns"; nsr "$ns" ip link set lo up; done
ip link add "${id}a" netns "$C" type veth peer name nc netns "$N"
ip link add "${id}b" netns "$P" type veth peer name np netns "$N"
nsr "$C" ip addr add 10.251.0.2/24 dev "${id}a"; nsr "$C" ip link set "${id}a" up
nsr "$C" ip route add default via 10.251.0.1
nsr "$N" ip addr add 10.251.0.1/24 dev nc; nsr "$N" ip link set nc up
nsr "$N" ip addr add 10.251.1.1/24 dev np; nsr "$N" ip link set np up
nsr "$N" sysctl -qw net.ipv4.ip_forward=1
nsr "$P" ip addr add 10.251.1.2/24 dev "${id}b"; nsr "$P" ip link set "${id}b" up
nsr "$P" ip route add default via 10.251.1.1

cat >"$tmp/server.cfg" <<CFG
global
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend web
  bind 10.251.1.2:8080
  http-request return status 200 content-type text/plain string "hello"
CFG
cat >"$tmp/tcp.cfg" <<CFG
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend fe
  bind 10.251.0.1:8081
  default_backend be
backend be
  server p 10.251.1.2:8080
CFG
# Started with nsenter itself (not the nsr function, which would fork a
# subshell whose pid is not the server's): a server left running kept the
# script's output pipe open, which is how an earlier run "hung" after
# printing everything.
nsenter --net=/run/netns/"$P" haproxy -f "$tmp/server.cfg" & pids+=($!)
nsenter --net=/run/netns/"$N" haproxy -f "$tmp/tcp.cfg" & pids+=($!)
for _ in $(seq 100); do
  nsr "$C" wrk -t1 -c1 -d1s http://10.251.0.1:8081/ >/dev/null 2>&1 && break
  sleep 0.1
done

echo "| path | keep-alive req/s | p99 | errors | new conn req/s | p99 | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|"
# "direct pod, conntrack on": the same direct path while the proxy's rules
# are loaded in the node namespace, so that the kernel tracks connections
# there as on any node with NAT rules (the like-for-like baseline of the
# iptables row: its extra cost is then DNAT alone).
for t in "direct pod|10.251.1.2:8080|" "direct pod, conntrack on|10.251.1.2:8080|iptables" "iptables mode|10.96.0.1:80|iptables" "nftables mode|10.96.0.1:80|nftables" "userspace mode|10.96.0.1:80|userspace" "HAProxy TCP|10.251.0.1:8081|"; do
  IFS='|' read -r name addr mode <<<"$t"
  [[ $name =~ $ROWS ]] || continue
  # Each row starts with an empty conntrack table in the node: the
  # entries of the previous row (TIME_WAIT, 120 s) share reply tuples
  # (pod:8080 -> client:port) with this row's connections, whose inserts
  # then clash and wait for a SYN retransmit (that cost the iptables row
  # 80% of its new-connection rate when it ran right after a conntrack-on
  # row).
  nsr "$N" conntrack -F >/dev/null 2>&1 || true
  dp=
  if [[ -n $mode ]]; then
    # One mode at a time on the node (each run owns the FLOTILLA chains).
    "$BIN" serve --netns /run/netns/$N --mode "$mode" --vip 10.96.0.1:80 --endpoint 10.251.1.2:8080 >"$tmp/$mode.log" 2>&1 & dp=$!
    pids+=("$dp")
    for _ in $(seq 100); do grep -q ready "$tmp/$mode.log" && break; sleep 0.1; done
  fi
  ka=$(nsr "$C" wrk -t2 -c"$CONNS" -d"${DUR}s" --latency "http://$addr/")
  nc=$(nsr "$C" wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -H "Connection: close" "http://$addr/")
  [[ $WRK_OUT == 0 ]] || printf '%s\n%s\n' "$ka" "$nc" >&2
  rps() { awk '/Requests\/sec/ {print int($2)}'; }
  p99() { awk '$1=="99%" {print $2}'; }
  # Socket errors (connect, read, write, timeout) and non-2xx answers.
  errs() { awk '/Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} /Non-2xx/ {n += $NF} END {print n + 0}'; }
  echo "| $name | $(rps <<<"$ka") | $(p99 <<<"$ka") | $(errs <<<"$ka") | $(rps <<<"$nc") | $(p99 <<<"$nc") | $(errs <<<"$nc") |"
  [[ -z $dp ]] || stop "$dp"
done

[[ $SYNC == 1 ]] || exit 0
echo
echo "| mode / backend | services x 2 endpoints | rules (+ map elements) | full sync | one change (median of 5) | one change (max) | of which in iptables-restore / nft (median) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for backend in legacy nft nftables; do
  for n in 1000 5000 10000; do
    out=$("$BIN" sync --netns /run/netns/$S --services "$n" --backend "$backend")
    v() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $out"; }
    case $backend in
      legacy) label="iptables / legacy" ;;
      nft) label="iptables / nft" ;;
      *) label="nftables" ;;
    esac
    rules=$(v rules)
    [[ $(v elements) == 0 ]] || rules="$rules (+ $(v elements))"
    echo "| $label | $n | $rules | $(v full_sync_ms) ms | $(v one_change_ms_median) ms | $(v one_change_ms_max) ms | $(v one_change_kernel_ms_median) ms |"
  done
done
