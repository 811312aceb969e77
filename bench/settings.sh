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
