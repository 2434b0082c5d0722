#!/usr/bin/env bash
# End-to-end tests against a REAL 3-member LXD 5.0.2 cluster in a private network namespace.
# usage: tests/e2e/run.sh GATEWAY_BINARY [GATEWAY_BINARY...]   (the suite runs once per binary, e.g. normal + ASan)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cluster="$top/tests/cluster/cluster.sh"
[ $# -ge 1 ] || { echo "usage: $0 GATEWAY_BINARY..." >&2; exit 2; }

bash "$cluster" up
# shellcheck disable=SC1091
source "${LXDGW_CLUSTER_DIR:-/var/tmp/lxdgw-cluster}/env"
keep=${LXDGW_KEEP_CLUSTER:-0}
cleanup() { [ "$keep" = 1 ] || bash "$cluster" down; }
trap cleanup EXIT

rc=0
for bin in "$@"; do
    bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
    bash "$cluster" settle # a previous run's crash tests must not leave a half-recovered cluster behind
    echo "=== e2e with $bin"
    bash "$cluster" exec env LXDGW_BINARY="$bin" LXDGW_TOP="$top" \
        /usr/bin/python3 -m pytest -p no:cacheprovider -q -x --durations=25 "$here" || rc=1
done
exit $rc
