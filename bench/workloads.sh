#!/usr/bin/env bash
# bench/workloads.sh: the workload controllers' benchmark (issue 13): on
# hollow nodes, a Deployment's pods all Ready against the same pods created
# directly, in one run. Same options as bench/schedule.sh (see --help);
# defaults --nodes 100 --pods 3000.
exec "$(dirname "${BASH_SOURCE[0]}")/schedule.sh" --workloads "$@"
