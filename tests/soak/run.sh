#!/usr/bin/env bash
# `make soak`: tests/soak/soak.py against a real 3-member LXD 5.0.2 cluster of its own (tests/cluster/cluster.sh in the
# network namespace lxdgwS, state in /var/tmp/lxdgw-clusterS, so it never meets `make test`'s or `make demo`'s cluster).
# usage: tests/soak/run.sh GATEWAY_BINARY     (SOAK_MINUTES=3 for a short run; see soak.py for the other knobs)
# LXDGW_KEEP_CLUSTER=1 leaves the cluster up afterwards (soak.py removes what it made in it either way).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cluster="$top/tests/cluster/cluster.sh"
[ $# = 1 ] || { echo "usage: $0 GATEWAY_BINARY" >&2; exit 2; }
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[ -x "$bin" ] || { echo "soak: $bin is not an executable" >&2; exit 2; }

export LXDGW_NETNS=${LXDGW_NETNS:-lxdgwS}
export LXDGW_CLUSTER_DIR=${LXDGW_CLUSTER_DIR:-/var/tmp/lxdgw-clusterS}
bash "$cluster" up
cleanup() { [ "${LXDGW_KEEP_CLUSTER:-0}" = 1 ] || bash "$cluster" down; }
trap cleanup EXIT
bash "$cluster" settle
# -u: the progress lines and the final report reach a pipe (tee, CI log) as they are printed
bash "$cluster" exec env LXDGW_BINARY="$bin" LXDGW_TOP="$top" PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 -u "$here/soak.py"
