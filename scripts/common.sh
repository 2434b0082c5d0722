# Sourced by the demo, bench and gateway-ctl scripts: where things are.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster="$top/tests/cluster/cluster.sh"   # the real-cluster harness
ctl="$top/scripts/gateway-ctl.sh"         # starts/stops a gateway in front of it
DIR=${LXDGW_CLUSTER_DIR:-/var/tmp/lxdgw-cluster}
NS=${LXDGW_NETNS:-lxdgw}
