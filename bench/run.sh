#!/usr/bin/env bash
# bench/run.sh: compare a three-master Flotilla with a three-member etcd on
# this machine, through the same etcd v3 API load generator (flotilla-bench).
#
# See bench/README.md for what is measured and what every column means.
# Everything listens on 127.0.0.1 only. Every process this script starts, and
# its temporary directory, is removed on exit (also on failure or Ctrl-C).
set -euo pipefail

# The whole script is one brace group ending in `exit`, so bash parses all of
# it before running any of it: editing this file during a run cannot change
# the running copy.
{

usage() {
  cat <<'EOF'
Usage: bench/run.sh [options]

  --quick              shrink every workload (about 10x fewer requests,
                       3 failovers, 100,000 puts for the disk/memory point)
  --only SYSTEM        run only "etcd" or "flotilla" (default: both)
  --kills N            leader failovers per system (default 20; --quick: 3)
  --disk-puts N        puts before measuring disk and memory (default 1000000)
  --disk-keys N        distinct keys for those puts (default 10000)
  --clients LIST       client counts, space or comma separated
                       (default "1 16 256 1000")
  --no-check-perf      skip `etcdctl check perf` (each load takes 60 s)
  --revoke-keys N      keys attached to one lease before its revoke is
                       timed (default 200000; --quick: 20000; 0: skip)
  --no-fsync           run both systems without fsync (their
                       --unsafe-no-fsync), to compare the CPU path alone
  --results FILE       append the report here (default bench/RESULTS.md;
                       "-" to append nothing)
  --keep-logs DIR      copy the members' logs there before cleaning up
  --workdir DIR        parent of the temporary data directories
                       (default ${TMPDIR:-/tmp}); it should be a real disk,
                       not tmpfs, or fsync costs nothing
  -h, --help           this text

Environment: FLOTILLA_BIN (default $CARGO_TARGET_DIR/release/flotilla),
BENCH_BIN (default $CARGO_TARGET_DIR/release/flotilla-bench, built if
missing), ETCD_BIN (/usr/bin/etcd), ETCDCTL_BIN (/usr/bin/etcdctl).
EOF
}

CMDLINE="$(printf '%q ' "$0" "$@")"
CMDLINE="${CMDLINE% }"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}"

QUICK=0
ONLY=both
KILLS=""
DISK_PUTS=""
DISK_KEYS=10000
CLIENT_LIST="1 16 256 1000"
CHECK_PERF=1
REVOKE_KEYS=""
NO_FSYNC=0
RESULTS="$SCRIPT_DIR/RESULTS.md"
WORK_PARENT="${TMPDIR:-/tmp}"
KEEP_LOGS=""

while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="${2:?--only needs etcd or flotilla}"; shift ;;
    --kills) KILLS="${2:?}"; shift ;;
    --disk-puts) DISK_PUTS="${2:?}"; shift ;;
    --disk-keys) DISK_KEYS="${2:?}"; shift ;;
    --clients) CLIENT_LIST="${2//,/ }"; shift ;;
    --no-check-perf) CHECK_PERF=0 ;;
    --revoke-keys) REVOKE_KEYS="${2:?}"; shift ;;
    --no-fsync) NO_FSYNC=1 ;;
    --results) RESULTS="${2:?}"; shift ;;
    --workdir) WORK_PARENT="${2:?}"; shift ;;
    --keep-logs) KEEP_LOGS="${2:?}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

case "$ONLY" in
  both) SYSTEMS="flotilla etcd" ;;
  etcd|flotilla) SYSTEMS="$ONLY" ;;
  *) echo "run.sh: --only must be etcd, flotilla or both" >&2; exit 2 ;;
esac

# Workload sizes. Totals are chosen so that each point takes a few seconds on
# a small (2-core) machine; --quick divides them by ten.
SCALE=1
((QUICK)) && SCALE=10
: "${KILLS:=$((QUICK ? 3 : 20))}"
: "${DISK_PUTS:=$((QUICK ? 100000 : 1000000))}"
: "${REVOKE_KEYS:=$((QUICK ? 20000 : 200000))}"
RANGE_KEYS=10000
POINT_SECS=120 # a put/range point stops after this long even if unfinished
range_total() { # clients -> number of ranges
  local c=$1 t
  if ((c <= 1)); then t=5000; elif ((c <= 16)); then t=30000; elif ((c <= 256)); then t=60000; else t=80000; fi
  echo $((t / SCALE))
}

# The settings both systems run with (ETCD_SETTINGS, FLOTILLA_SETTINGS).
# shellcheck source=bench/settings.sh
source "$SCRIPT_DIR/settings.sh"
FSYNC="fsync per commit"
if ((NO_FSYNC)); then
  ETCD_SETTINGS+=(--unsafe-no-fsync)
  FLOTILLA_SETTINGS+=(--unsafe-no-fsync)
  FSYNC="no fsync (--unsafe-no-fsync: the CPU path alone, not a durable setup)"
fi

FLOTILLA="${FLOTILLA_BIN:-$CARGO_TARGET_DIR/release/flotilla}"
BENCH="${BENCH_BIN:-$CARGO_TARGET_DIR/release/flotilla-bench}"
ETCD="${ETCD_BIN:-/usr/bin/etcd}"
ETCDCTL="${ETCDCTL_BIN:-/usr/bin/etcdctl}"

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
NOTES=() # anomalies worth a line under the table
note() { log "NOTE: $*"; NOTES+=("$*"); }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Prerequisites

if [[ ! -x "$BENCH" ]]; then
  log "building flotilla-bench (release) into $CARGO_TARGET_DIR"
  (cd "$REPO_DIR" && cargo build --release -p flotilla-bench) || die "cannot build flotilla-bench"
fi
if [[ " $SYSTEMS " == *" etcd "* || $CHECK_PERF == 1 ]]; then
  if [[ ! -x "$ETCD" || ! -x "$ETCDCTL" ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      log "installing etcd-server and etcd-client"
      DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client >&2 || die "apt-get install failed"
    fi
    [[ -x "$ETCD" && -x "$ETCDCTL" ]] || die "etcd not found (apt-get install etcd-server etcd-client)"
  fi
fi
if [[ " $SYSTEMS " == *" flotilla "* ]]; then
  [[ -x "$FLOTILLA" ]] || die "flotilla binary not found at $FLOTILLA (build it, or set FLOTILLA_BIN, or use --only etcd)"
  "$FLOTILLA" master --help 2>&1 | grep -q -- '--initial-cluster' ||
    die "'$FLOTILLA master --help' does not describe --initial-cluster; is the master implemented?"
fi

# Refuse to start if one of our ports is already taken.
ALL_PORTS="32379 32380 32479 32480 32579 32580 42379 42380 42479 42480 42579 42580"
for p in $ALL_PORTS; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is already in use; stop whatever listens there first"
  fi
done

mkdir -p "$WORK_PARENT"
WORK="$(mktemp -d "$WORK_PARENT/flotilla-bench.XXXXXX")"
OUT="$WORK/out"
LOGS="$WORK/logs"
mkdir -p "$OUT" "$LOGS"

# ---------------------------------------------------------------------------
# Process bookkeeping and cleanup

declare -A PID=() # "system:i" -> pid of that member

# Kill one member we started: only if its command line still names our work
# directory (so a recycled pid is never touched).
stop_pid() { # pid signal
  local pid=$1 sig=$2
  [[ -r /proc/$pid/cmdline ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WORK" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
}

# True while the process exists and is not a zombie.
alive() { # pid
  [[ -e /proc/$1 ]] && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

wait_gone() { # pid timeout_secs -> 0 once it has exited, 1 on time-out
  local pid=$1 end=$((SECONDS + $2))
  while alive "$pid"; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
  return 0
}

stop_all() {
  local k
  for k in "${!PID[@]}"; do stop_pid "${PID[$k]}" TERM; done
  for k in "${!PID[@]}"; do
    if ! wait_gone "${PID[$k]}" 15; then
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
  # The load generator or etcdctl, if one is running (only if still our child).
  if [[ -n ${CHILD:-} && "$(awk '{print $4}' "/proc/$CHILD/stat" 2>/dev/null)" == "$$" ]]; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  stop_all
  if [[ -n $KEEP_LOGS ]]; then
    mkdir -p "$KEEP_LOGS" && cp -r "$LOGS"/. "$KEEP_LOGS"/ && log "member logs copied to $KEEP_LOGS" || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Cluster control

client_port() { # system i -> port
  case "$1" in etcd) echo $((32279 + 100 * $2)) ;; flotilla) echo $((42279 + 100 * $2)) ;; esac
}
peer_port() { echo $(($(client_port "$1" "$2") + 1)); }
member_name() { case "$1" in etcd) echo "e$2" ;; flotilla) echo "m$2" ;; esac; }
leader_endpoint() { # system -> the leader's endpoint, as last ordered (settings.sh)
  local order=(${ORDER[$1]})
  echo "127.0.0.1:$(client_port "$1" "${order[2]}")"
}
data_dir() { echo "$WORK/$1/$(member_name "$1" "$2")"; }

start_member() { # system i
  local sys=$1 i=$2 name dir cp pp
  name="$(member_name "$sys" "$i")"
  dir="$(data_dir "$sys" "$i")"
  cp="$(client_port "$sys" "$i")"
  pp="$(peer_port "$sys" "$i")"
  mkdir -p "$dir"
  case "$sys" in
    etcd)
      local ic="e1=http://127.0.0.1:$(peer_port etcd 1),e2=http://127.0.0.1:$(peer_port etcd 2),e3=http://127.0.0.1:$(peer_port etcd 3)"
      "$ETCD" --name "$name" --data-dir "$dir" \
        --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
        --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
        --initial-cluster "$ic" --initial-cluster-token flotilla-bench --initial-cluster-state new \
        --logger zap --log-outputs stderr "${ETCD_SETTINGS[@]}" \
        >>"$LOGS/$name.log" 2>&1 &
      ;;
    flotilla)
      local ic="m1=127.0.0.1:$(peer_port flotilla 1),m2=127.0.0.1:$(peer_port flotilla 2),m3=127.0.0.1:$(peer_port flotilla 3)"
      "$FLOTILLA" master --name "$name" --data-dir "$dir" \
        --client-addr "127.0.0.1:$cp" --peer-addr "127.0.0.1:$pp" --initial-cluster "$ic" \
        "${FLOTILLA_SETTINGS[@]}" >>"$LOGS/$name.log" 2>&1 &
      ;;
  esac
  PID[$sys:$i]=$!
}

all_alive() { # system
  local i
  for i in 1 2 3; do
    alive "${PID[$1:$i]}" || { log "$(member_name "$1" "$i") (pid ${PID[$1:$i]}) has exited"; return 1; }
  done
}

# Poll until all three members answer Status and agree on a leader.
wait_healthy() { # system timeout_secs
  local sys=$1 end=$((SECONDS + $2)) eps
  eps="$(endpoints "$sys")"
  while :; do
    "$BENCH" --endpoints "$eps" healthy >/dev/null 2>&1 && return 0
    all_alive "$sys" || return 1
    if ((SECONDS >= end)); then
      "$BENCH" --endpoints "$eps" healthy >&2 || true
      log "$sys did not become healthy within $2 s"
      return 1
    fi
    sleep 0.2
  done
}

# The endpoint of the current leader, into $LEADER; fails if none is
# found within 30 s.
LEADER=""
find_leader() { # system
  LEADER=""
  run_child "$OUT/leader.out" "$BENCH" --endpoints "$(endpoints "$1")" leader --wait-secs 30 || return 1
  LEADER="$(cat "$OUT/leader.out")"
}

start_cluster() { # system
  local sys=$1 i
  rm -rf "${WORK:?}/$sys"
  log "starting three $sys members"
  for i in 1 2 3; do start_member "$sys" "$i"; done
  wait_healthy "$sys" 90 || die "$sys cluster did not come up"
  # A leader exists; also require one acknowledged write.
  run_child /dev/null "$BENCH" --endpoints "$(endpoints "$sys")" until-write --timeout-secs 30 ||
    die "$sys cluster does not accept writes"
  find_leader "$sys" || die "$sys: no leader found"
  set_order "$sys" "$LEADER" || die "$sys: leader endpoint $LEADER is not one of ours"
  log "$sys is up (leader $LEADER; clients spread over members ${ORDER[$sys]})"
}

stop_cluster() { # system
  local sys=$1 i k st
  for i in 1 2 3; do
    k="$sys:$i"
    if [[ -n "${PID[$k]:-}" ]]; then stop_pid "${PID[$k]}" TERM; fi
  done
  for i in 1 2 3; do
    k="$sys:$i"
    [[ -n "${PID[$k]:-}" ]] || continue
    if ! wait_gone "${PID[$k]}" 15; then
      note "$sys: $(member_name "$sys" "$i") ignored SIGTERM for 15 s and was SIGKILLed"
      stop_pid "${PID[$k]}" KILL
      wait_gone "${PID[$k]}" 5 || true
    fi
    st=0
    wait "${PID[$k]}" 2>/dev/null || st=$?
    # 0: clean exit; 143: default SIGTERM action; 137: the SIGKILL above.
    if [[ $st != 0 && $st != 143 && $st != 137 ]]; then
      note "$sys: $(member_name "$sys" "$i") exited with status $st when stopped with SIGTERM$( ((st > 128)) && echo " (signal $((st - 128)))")"
      tail -n 20 "$LOGS/$(member_name "$sys" "$i").log" >&2 || true
    fi
    unset "PID[$k]"
  done
}

rss_kib() { # system -> sum of VmRSS (KiB) of the three members
  local sys=$1 i total=0 v
  for i in 1 2 3; do
    v="$(awk '/^VmRSS:/ {print $2}' "/proc/${PID[$sys:$i]}/status" 2>/dev/null || true)"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

disk_bytes() { # system -> du -sb of the three data dirs, summed
  local sys=$1 i total=0 v
  for i in 1 2 3; do
    v="$(du -sb "$(data_dir "$sys" "$i")" | awk '{print $1}')"
    total=$((total + v))
  done
  echo "$total"
}

# ---------------------------------------------------------------------------
# Workloads

# Append one JSON line to $OUT/<system>.jsonl, tagged with the system.
record() { # system json
  local line
  [[ $2 == \{*\} ]] || die "$1: the load generator printed no result (see its error above)"
  line="$(printf '{"system":"%s",%s' "$1" "${2#\{}")"
  echo "$line" >>"$OUT/$1.jsonl"
  log "$line"
}

# Run a command in the background and wait for it: `wait` returns as soon as
# a trapped signal arrives, so SIGTERM to this script takes effect at once
# (instead of after a 60 s command ends); cleanup then kills $CHILD.
CHILD=""
run_child() { # [--merge] stdout-file command... -> the command's exit status
  local merge=0 outf rc=0
  if [[ $1 == --merge ]]; then merge=1; shift; fi # stderr into the file too
  outf=$1
  shift
  if ((merge)); then "$@" >"$outf" 2>&1 & else "$@" >"$outf" & fi
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

# Run the load generator against a system; its JSON line lands in $JSON.
JSON=""
bench() { # system args...
  bench_at "$1" "$(endpoints "$1")" "${@:2}"
}

# The load generator against the leader alone (its JSON says "endpoints":1).
bench_leader() { # system args...
  bench_at "$1" "$(leader_endpoint "$1")" "${@:2}"
}

bench_at() { # system endpoints args...
  local sys=$1 eps=$2
  shift 2
  all_alive "$sys" || die "a $sys member exited unexpectedly (killed from outside the script?)"
  JSON=""
  run_child "$OUT/bench.out" "$BENCH" --endpoints "$eps" "$@" || true
  JSON="$(head -n 1 "$OUT/bench.out")"
}

run_throughput() { # system
  local sys=$1 c
  for c in $CLIENT_LIST; do
    bench "$sys" put --clients "$c" --total "$(put_total "$c")" \
      --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --max-secs "$POINT_SECS"
    record "$sys" "$JSON"
    if ((c == 1)); then
      bench_leader "$sys" put --clients 1 --total "$(put_total 1)" \
        --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --max-secs "$POINT_SECS"
      record "$sys" "$JSON"
    fi
  done
  # Ranges read a populated keyspace: write every key once first.
  bench "$sys" put --sequential --clients 64 --total "$RANGE_KEYS" --keyspace "$RANGE_KEYS" \
    --key-size "$KEY_SIZE" --val-size "$VAL_SIZE"
  [[ $JSON == *'"errors":0'* ]] || note "$sys: populating the range keyspace had errors: $JSON"
  local cons
  for cons in l s; do
    for c in $CLIENT_LIST; do
      bench "$sys" range --clients "$c" --total "$(range_total "$c")" \
        --consistency "$cons" --keyspace "$RANGE_KEYS" --key-size "$KEY_SIZE" --max-secs "$POINT_SECS"
      record "$sys" "$JSON"
      if ((c == 1)) && [[ $cons == l ]]; then
        bench_leader "$sys" range --clients 1 --total "$(range_total 1)" \
          --consistency l --keyspace "$RANGE_KEYS" --key-size "$KEY_SIZE" --max-secs "$POINT_SECS"
        record "$sys" "$JSON"
      fi
    done
  done
}

run_check_perf() { # system
  local sys=$1 load out rc summary
  for load in m l; do
    all_alive "$sys" || die "a $sys member exited unexpectedly (killed from outside the script?)"
    log "$sys: etcdctl check perf --load=$load (60 s)"
    rc=0
    run_child --merge "$OUT/check-perf.out" env ETCDCTL_API=3 timeout 240 "$ETCDCTL" \
      --endpoints="$(endpoints "$sys")" check perf --load="$load" || rc=$?
    out="$(cat "$OUT/check-perf.out")"
    # Keep the verdict lines; drop the progress bar. (etcdctl 3.4 prints
    # "Slowest request took too long" without a FAIL: prefix.)
    summary="$(printf '%s\n' "$out" | tr '\r' '\n' |
      awk '/^(PASS|FAIL): / || /too (long|high|low)/ || /[Ee]rror/ {
        if ($0 !~ /^(PASS|FAIL)/ && $0 !~ /[Ee]rror/) $0 = "FAIL: " $0
        if (!seen[$0]++) print }' | paste -sd ';' - || true)"
    summary="${summary//\"/\'}"
    summary="${summary//\\//}"
    record "$sys" "{\"workload\":\"check-perf-$load\",\"pass\":$([[ $rc == 0 ]] && echo true || echo false),\"exit\":$rc,\"summary\":\"${summary:-no output}\"}"
  done
}

# A lease revoke of many keys: REVOKE_KEYS keys of 200 bytes (no zero
# byte) with 100-byte values, all attached to one lease (by transactions
# of 100 puts: etcd 3.4 applies a put with a lease in time linear in the
# keys the lease already has, etcd-io/etcd#15993, so that 200,000 single
# puts did not finish in 10 minutes), then one revoke,
# timed by etcdctl's wall clock (given a minute instead of its default
# 5 s). The members' warnings logged until it returns are counted: a
# leader whose heartbeats or appends to the followers ran late behind the
# revoke's writes (Flotilla: "timed out"; etcd: "failed to send out
# heartbeat on time"). So is a change of leader.
REVOKE_WARNINGS='timed out|failed to send out heartbeat'
run_revoke() { # system
  local sys=$1 leader after id i n t0 t1 rc=0 warnings=0 lines=() txns keys
  txns=$(((REVOKE_KEYS + 99) / 100))
  keys=$((txns * 100))
  find_leader "$sys" || die "$sys: no leader before the revoke"
  leader=$LEADER
  run_child "$OUT/grant.out" env ETCDCTL_API=3 "$ETCDCTL" --endpoints="$leader" lease grant 3600 ||
    die "$sys: lease grant failed: $(cat "$OUT/grant.out")"
  id="$(awk '/granted/ {print $2}' "$OUT/grant.out")"
  [[ -n $id ]] || die "$sys: no lease id in: $(cat "$OUT/grant.out")"
  log "$sys: $keys keys on lease $id, then its revoke"
  bench "$sys" put --clients 16 --total "$txns" --keyspace "$txns" --puts-per-txn 100 --sequential \
    --key-size 200 --val-size 100 --lease "$id" --max-secs 600
  if [[ $JSON != *"\"ops\":$txns,"*'"errors":0'* ]]; then
    # The system's own failure, not the script's: recorded (the table shows
    # no revoke for it), and the run goes on to the other points.
    log "$sys: attaching the keys to the lease failed; no revoke: $JSON"
    record "$sys" "${JSON/\"workload\":\"put\"/\"workload\":\"attach-failed\",\"puts_per_txn\":100}"
    record "$sys" "$(printf '{"workload":"revoke","keys":%d,"ok":false,"seconds":null,"attach_failed":true}' "$keys")"
    return 0
  fi
  record "$sys" "${JSON/\"workload\":\"put\"/\"workload\":\"attach\",\"puts_per_txn\":100}"
  for i in 1 2 3; do lines[i]=$(wc -l <"$LOGS/$(member_name "$sys" "$i").log"); done
  t0=$(date +%s%N)
  run_child --merge "$OUT/revoke.out" env ETCDCTL_API=3 "$ETCDCTL" --endpoints="$leader" \
    --command-timeout=60s lease revoke "$id" || rc=$?
  t1=$(date +%s%N)
  for i in 1 2 3; do
    n=$(tail -n +"$((lines[i] + 1))" "$LOGS/$(member_name "$sys" "$i").log" | grep -cE "$REVOKE_WARNINGS" || true)
    warnings=$((warnings + n))
  done
  # No leader found afterwards counts as a change.
  find_leader "$sys" || true
  after=${LEADER:-none}
  record "$sys" "$(printf '{"workload":"revoke","keys":%d,"ok":%s,"seconds":%s,"warnings":%d,"leader_changed":%s}' \
    "$keys" "$([[ $rc == 0 ]] && echo true || echo false)" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" "$warnings" \
    "$([[ $after == "$leader" ]] && echo false || echo true)")"
}

run_failover() { # system kills
  local sys=$1 n=$2 k i pid t0 out eps
  eps="$(endpoints "$sys")"
  for ((k = 1; k <= n; k++)); do
    find_leader "$sys" || die "$sys: no leader before kill $k"
    i="$(member_at "$sys" "$LEADER")" || die "$sys: leader endpoint $LEADER is not one of ours"
    pid="${PID[$sys:$i]}"
    log "$sys: kill $k/$n: SIGKILL leader $(member_name "$sys" "$i") (pid $pid)"
    t0="$(date +%s%N)"
    stop_pid "$pid" KILL
    # Measure at once (the process may take a while to be torn down, as
    # clients would see it); reap it afterwards.
    run_child "$OUT/until-write.out" "$BENCH" --endpoints "$eps" until-write --since-unix-ns "$t0" --timeout-secs 30 || true
    wait "$pid" 2>/dev/null || true
    out="$(head -n 1 "$OUT/until-write.out")"
    [[ $out == \{* ]] || out='{"workload":"until-write","ok":false}'
    record "$sys" "$(printf '{"kill":%d,"killed":"%s",%s' "$k" "$(member_name "$sys" "$i")" "${out#\{}")"
    start_member "$sys" "$i"
    wait_healthy "$sys" 90 || die "$sys: $(member_name "$sys" "$i") did not rejoin after kill $k"
  done
}

run_footprint() { # system
  local sys=$1
  start_cluster "$sys"
  record "$sys" "{\"workload\":\"idle\",\"disk_bytes\":$(disk_bytes "$sys"),\"rss_kib\":$(rss_kib "$sys")}"
  bench "$sys" put --clients 256 --total "$DISK_PUTS" --keyspace "$DISK_KEYS" \
    --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --max-secs 1800
  record "$sys" "${JSON/\"workload\":\"put\"/\"workload\":\"fill\"}"
  record "$sys" "{\"workload\":\"footprint\",\"puts\":$DISK_PUTS,\"keys\":$DISK_KEYS,\"disk_bytes\":$(disk_bytes "$sys"),\"rss_kib\":$(rss_kib "$sys")}"
  stop_cluster "$sys"
  rm -rf "${WORK:?}/$sys"
}

run_system() { # system
  local sys=$1
  : >"$OUT/$sys.jsonl"
  start_cluster "$sys"
  run_throughput "$sys"
  if ((CHECK_PERF)); then run_check_perf "$sys"; fi
  if ((REVOKE_KEYS > 0)); then run_revoke "$sys"; fi
  if ((KILLS > 0)); then run_failover "$sys" "$KILLS"; fi
  stop_cluster "$sys"
  rm -rf "${WORK:?}/$sys"
  run_footprint "$sys"
}

START_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
START_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
for sys in $SYSTEMS; do
  log "=== $sys ==="
  run_system "$sys"
done

# ---------------------------------------------------------------------------
# Report

# Field of the first JSON line of $OUT/<system>.jsonl that matches a filter.
field() { # system filter-regex key
  local f="$OUT/$1.jsonl"
  [[ -f $f ]] || return 0
  grep -E -- "$2" "$f" | head -n 1 | sed -n "s/.*\"$3\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" | tr -d '"'
}

fmt_num() { # value decimals -> formatted, or "—"
  [[ -z $1 || $1 == null ]] && { echo "—"; return; }
  awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f\n", d, v }'
}

ratio() { # flotilla etcd -> flotilla/etcd
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "" || b == "" || a == "null" || b == "null" || a == "—" || b == "—" || b + 0 == 0) { print "—"; exit }
    printf "%.2f\n", a / b }'
}

# Failover statistics over the ok samples: median, mean, max (ms).
failover_stats() { # system -> "median mean max ok total"
  local f="$OUT/$1.jsonl"
  [[ -f $f ]] || { echo "    "; return; }
  grep '"workload":"until-write"' "$f" | awk '
    { tot++; if ($0 ~ /"ok":true/) { match($0, /"ms":[0-9.]+/); v[n++] = substr($0, RSTART + 5, RLENGTH - 5) + 0 } }
    END {
      if (n == 0) { printf "null null null 0 %d\n", tot; exit }
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      s = 0; for (i = 0; i < n; i++) s += v[i]
      med = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
      printf "%.1f %.1f %.1f %d %d\n", med, s / n, v[n - 1], n, tot }'
}

TABLE="$OUT/table.md"
{
  echo "| Metric | Flotilla | etcd | Flotilla/etcd |"
  echo "|---|---:|---:|---:|"
  row() { # label flotilla-value etcd-value [ratio]
    printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "${4:-$(ratio "$2" "$3")}"
  }
  cell_thr() { # system filter -> throughput cell (with error count)
    local v e
    v="$(field "$1" "$2" throughput)"
    e="$(field "$1" "$2" errors)"
    v="$(fmt_num "$v" 0)"
    if [[ -n $e && $e != 0 ]]; then v="$v ($e err)"; fi
    echo "$v"
  }
  for wl in put range-l range-s; do
    case $wl in
      put) label="put" ;;
      range-l) label="range, linearizable" ;;
      range-s) label="range, serializable" ;;
    esac
    for c in $CLIENT_LIST; do
      for eps in 3 1; do
        filt="\"workload\":\"$wl\",\"clients\":$c,\"endpoints\":$eps,"
        cl="$c clients"
        if ((c == 1)); then cl="1 client"; fi
        if ((eps == 1)); then
          # Only the 1-client put and linearizable range have a leader point.
          [[ -n "$(field flotilla "$filt" throughput)$(field etcd "$filt" throughput)" ]] || continue
          cl="$cl on the leader"
        elif ((c == 1)); then
          cl="$cl on a follower"
        fi
        fv="$(cell_thr flotilla "$filt")"; ev="$(cell_thr etcd "$filt")"
        row "$label, $cl: throughput (ops/s)" "$fv" "$ev" "$(ratio "${fv%% *}" "${ev%% *}")"
        for q in p50 p99; do
          row "$label, $cl: $q latency (ms)" \
            "$(fmt_num "$(field flotilla "$filt" "${q}_ms")" 2)" "$(fmt_num "$(field etcd "$filt" "${q}_ms")" 2)"
        done
      done
    done
  done
  read -r fmed fmean fmax fok ftot <<<"$(failover_stats flotilla)"
  read -r emed emean emax eok etot <<<"$(failover_stats etcd)"
  row "failover: median ms from SIGKILL of leader to first acked put" "$(fmt_num "$fmed" 1)" "$(fmt_num "$emed" 1)"
  row "failover: mean ms" "$(fmt_num "$fmean" 1)" "$(fmt_num "$emean" 1)"
  row "failover: max ms" "$(fmt_num "$fmax" 1)" "$(fmt_num "$emax" 1)"
  row "failover: successful / attempted kills" "${fok:-—}/${ftot:-—}" "${eok:-—}/${etot:-—}" "—"
  fd="$(field flotilla '"workload":"footprint"' disk_bytes)"; ed="$(field etcd '"workload":"footprint"' disk_bytes)"
  row "disk after $DISK_PUTS puts over $DISK_KEYS keys (MiB, 3 members, du -sb)" \
    "$(fmt_num "$(awk -v b="${fd:-null}" 'BEGIN{ if (b=="null") print "null"; else print b/1048576 }')" 1)" \
    "$(fmt_num "$(awk -v b="${ed:-null}" 'BEGIN{ if (b=="null") print "null"; else print b/1048576 }')" 1)" \
    "$(ratio "$fd" "$ed")"
  fd="$(field flotilla '"workload":"idle"' disk_bytes)"; ed="$(field etcd '"workload":"idle"' disk_bytes)"
  row "disk of a fresh idle cluster (MiB, 3 members, du -sb)" \
    "$(fmt_num "$(awk -v b="${fd:-null}" 'BEGIN{ if (b=="null") print "null"; else print b/1048576 }')" 1)" \
    "$(fmt_num "$(awk -v b="${ed:-null}" 'BEGIN{ if (b=="null") print "null"; else print b/1048576 }')" 1)" \
    "$(ratio "$fd" "$ed")"
  fr="$(field flotilla '"workload":"footprint"' rss_kib)"; er="$(field etcd '"workload":"footprint"' rss_kib)"
  row "RSS after those puts (MiB, sum of 3 members)" \
    "$(fmt_num "$(awk -v b="${fr:-null}" 'BEGIN{ if (b=="null") print "null"; else print b/1024 }')" 1)" \
    "$(fmt_num "$(awk -v b="${er:-null}" 'BEGIN{ if (b=="null") print "null"; else print b/1024 }')" 1)" \
    "$(ratio "$fr" "$er")"
  fr="$(field flotilla '"workload":"idle"' rss_kib)"; er="$(field etcd '"workload":"idle"' rss_kib)"
  row "RSS of a fresh idle cluster (MiB, sum of 3 members)" \
    "$(fmt_num "$(awk -v b="${fr:-null}" 'BEGIN{ if (b=="null") print "null"; else print b/1024 }')" 1)" \
    "$(fmt_num "$(awk -v b="${er:-null}" 'BEGIN{ if (b=="null") print "null"; else print b/1024 }')" 1)" \
    "$(ratio "$fr" "$er")"
  if ((REVOKE_KEYS > 0)); then
    row "lease revoke of $(((REVOKE_KEYS + 99) / 100 * 100)) keys: seconds (etcdctl, 60 s timeout)" \
      "$(fmt_num "$(field flotilla '"workload":"revoke"' seconds)" 2)" "$(fmt_num "$(field etcd '"workload":"revoke"' seconds)" 2)"
    row "attaching them: puts/s (transactions of 100 puts with the lease, 16 clients)" \
      "$(fmt_num "$(awk -v t="$(field flotilla '"workload":"attach"' throughput)" 'BEGIN { if (t != "") print t * 100 }')" 0)" \
      "$(fmt_num "$(awk -v t="$(field etcd '"workload":"attach"' throughput)" 'BEGIN { if (t != "") print t * 100 }')" 0)"
    revoke_cell() { # system -> "warnings; leader changed", or —
      local w
      w="$(field "$1" '"workload":"revoke"' warnings)"
      [[ -n $w ]] || { echo "—"; return; }
      echo "$w; $(field "$1" '"workload":"revoke"' leader_changed)"
    }
    row "lease revoke: leaders' late heartbeats or appends logged; leader changed" \
      "$(revoke_cell flotilla)" "$(revoke_cell etcd)" "—"
  fi
  for load in m l; do
    verdict() {
      local p
      p="$(field "$1" "\"workload\":\"check-perf-$load\"" pass)"
      case "$p" in true) echo PASS ;; false) echo FAIL ;; *) echo "—" ;; esac
    }
    row "etcdctl check perf --load=$load" "$(verdict flotilla)" "$(verdict etcd)" "—"
  done
} >"$TABLE"

echo
cat "$TABLE"
echo

if [[ $RESULTS != "-" ]]; then
  ETCD_VERSION="$("$ETCD" --version 2>/dev/null | head -n 1 || true)"
  FLOTILLA_VERSION="—"
  FLOTILLA_DEFAULTS=""
  if [[ " $SYSTEMS " == *" flotilla "* ]]; then
    FLOTILLA_VERSION="$("$FLOTILLA" --version 2>/dev/null | head -n 1 || true)"
    FLOTILLA_VERSION="${FLOTILLA_VERSION:-unknown} ($(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo 'no commit'))"
    # The master's own defaults, as its --help states them.
    FLOTILLA_DEFAULTS="$("$FLOTILLA" master --help 2>/dev/null | awk '
      /^ *--/ { opt = $1 }
      /\[default: / && opt ~ /heartbeat|election|compaction|snapshot/ {
        match($0, /\[default: [^]]*\]/); printf "%s%s=%s", sep, opt, substr($0, RSTART + 10, RLENGTH - 11); sep = ", " }')"
  fi
  if [[ ! -s $RESULTS ]]; then
    {
      echo "# Flotilla vs etcd: benchmark results"
      echo
      echo "Appended by \`bench/run.sh\`; see bench/README.md for what every row means."
    } >"$RESULTS"
  fi
  {
    echo
    echo "## Run of $START_DATE"
    echo
    echo "- Command: \`$CMDLINE\` (systems: $SYSTEMS; quick=$QUICK)"
    echo "- Machine: $(nproc) CPUs ($(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r), data on $(df -T "$WORK_PARENT" | awk 'NR == 2 {print $2}')"
    echo "- Finished: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load average at start $START_LOAD, at end $(cut -d' ' -f1-3 /proc/loadavg) (anything else running skews the figures)"
    echo "- etcd: $ETCD_VERSION; Flotilla: $FLOTILLA_VERSION"
    echo "- Configuration, the same for both: heartbeat $HEARTBEAT_MS ms, election timeout $ELECTION_MS ms, history compacted to the last $COMPACT_KEEP revisions, $FSYNC (etcd: \`${ETCD_SETTINGS[*]}\`; Flotilla: \`${FLOTILLA_SETTINGS[*]}\`)${FLOTILLA_DEFAULTS:+; other Flotilla defaults, as its --help states them: $FLOTILLA_DEFAULTS}"
    echo "- Puts: ${KEY_SIZE}-byte keys, ${VAL_SIZE}-byte values; ranges: single key over $RANGE_KEYS keys; failover: $KILLS kills"
    echo
    cat "$TABLE"
    for sys in $SYSTEMS; do
      if grep -q '"workload":"check-perf' "$OUT/$sys.jsonl" 2>/dev/null; then
        echo
        echo "\`etcdctl check perf\` on $sys:"
        grep '"workload":"check-perf' "$OUT/$sys.jsonl" |
          sed -n 's/.*"workload":"\(check-perf-[a-z]*\)".*"summary":"\([^"]*\)".*/- \1: \2/p'
      fi
    done
    if ((${#NOTES[@]})); then
      echo
      echo "Notes:"
      for n in "${NOTES[@]}"; do echo "- $n"; done
    fi
    echo
    echo "<details><summary>Raw measurements (JSON lines)</summary>"
    echo
    echo '```'
    for sys in $SYSTEMS; do cat "$OUT/$sys.jsonl"; done
    echo '```'
    echo
    echo "</details>"
  } >>"$RESULTS"
  log "appended to $RESULTS"
fi

exit 0
}
