# Sourced by bench/run.sh, bench/objects.sh and bench/ab.sh: the settings both systems
# run with, so that their figures compare like with like. etcd's default
# heartbeat (100 ms) and election timeout (1,000 ms; Flotilla's own default
# is 300 ms, which etcd refuses with a 100 ms heartbeat: it wants 5
# heartbeats), and history compacted to the last COMPACT_KEEP revisions
# (etcd's revision mode compacts every 5 minutes; Flotilla compacts once a
# tenth more has accumulated). Both fsync every commit.
HEARTBEAT_MS=100
ELECTION_MS=1000
COMPACT_KEEP=10000
ETCD_SETTINGS=(--heartbeat-interval "$HEARTBEAT_MS" --election-timeout "$ELECTION_MS"
  --auto-compaction-mode revision --auto-compaction-retention "$COMPACT_KEEP")
FLOTILLA_SETTINGS=(--heartbeat-interval-ms "$HEARTBEAT_MS" --election-timeout-ms "$ELECTION_MS"
  --auto-compaction-retention "$COMPACT_KEEP")

# The put points' keys and values, and their totals by client count (the
# caller's SCALE divides them: run.sh's --quick; bench/ab.sh uses them too).
KEY_SIZE=8
VAL_SIZE=256
put_total() { # clients -> number of puts
  local c=$1 t
  if ((c <= 1)); then t=3000; elif ((c <= 16)); then t=20000; elif ((c <= 256)); then t=60000; else t=80000; fi
  echo $((t / ${SCALE:-1}))
}

# Which member (1-3) listens on a client endpoint; fails for none of ours.
# Needs the caller's client_port.
member_at() { # system endpoint -> i
  local j
  for j in 1 2 3; do
    if [[ "$2" == "127.0.0.1:$(client_port "$1" "$j")" ]]; then
      echo "$j"
      return 0
    fi
  done
  return 1
}

# The order in which clients are spread over the members (client i talks to
# the i-th, modulo 3), by system: both followers, then the leader, once
# set_order has found it. So the one client of a 1-client point talks to a
# follower in both systems, as two of three clients spread over every
# member do, rather than to whichever member is listed first
# (bench/README.md).
declare -A ORDER=([etcd]="1 2 3" [flotilla]="1 2 3")

set_order() { # system leader-endpoint
  local li j followers=""
  li="$(member_at "$1" "$2")" || return 1
  for j in 1 2 3; do ((j == li)) || followers+="$j "; done
  ORDER[$1]="$followers$li"
}

endpoints() { # system -> "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3", in ORDER
  local i out=""
  for i in ${ORDER[$1]}; do out+="${out:+,}127.0.0.1:$(client_port "$1" "$i")"; done
  echo "$out"
}
