# Sourced by bench/run.sh and bench/objects.sh: the settings both systems
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

# The order in which clients are spread over the members (client i talks to
# the i-th, modulo 3): both followers, then the leader. So the one client of
# a 1-client point talks to a follower in both systems, as two of three
# clients spread over every member do, rather than to whichever member is
# listed first (bench/README.md). Needs the caller's client_port.
members_followers_first() { # system leader-endpoint -> "i j k" (the leader last)
  local j followers="" li=""
  for j in 1 2 3; do
    if [[ "$2" == "127.0.0.1:$(client_port "$1" "$j")" ]]; then li=$j; else followers+="$j "; fi
  done
  [[ -n $li ]] || return 1
  echo "$followers$li"
}
