#!/usr/bin/env bash
# Starts/stops a gateway in front of the test cluster (tests/cluster/cluster.sh), for `make demo` and `make bench`.
#   gateway-ctl.sh start NAME BINARY ADDR    state in $LXDGW_CLUSTER_DIR/NAME, listening on ADDR in the namespace
#   gateway-ctl.sh stop NAME
# For replicas: LXDGW_SHARE_CERT=DIR takes the server certificate of the gateway in DIR (clients pin one certificate
# behind a load balancer); LXDGW_EXTRA_CONF=TEXT is appended to the configuration; LXDGW_CLUSTER_CONF="key: value" is
# one more key of its `cluster:` section.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

start() {
    local name=$1 bin=$2 addr=$3 state="$DIR/$1"
    bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
    stop "$name" 2>/dev/null || true
    mkdir -p "$state"
    # init keeps an existing configuration: with extra keys, start from a fresh one (they are appended below)
    [ -z "${LXDGW_EXTRA_CONF:-}${LXDGW_CLUSTER_CONF:-}" ] || rm -f "$state/lxd-gateway.yaml"
    "$bin" init --state-dir "$state" --listen "$addr" --member https://127.0.0.11:8443 \
        --cluster-certificate "$DIR/cluster.crt" >"$state/init.out"
    if [ -n "${LXDGW_SHARE_CERT:-}" ]; then
        cp "$LXDGW_SHARE_CERT/server.crt" "$LXDGW_SHARE_CERT/server.key" "$state/"
    fi
    if [ -n "${LXDGW_CLUSTER_CONF:-}" ]; then
        sed -i "s|^cluster:\$|cluster:\n  ${LXDGW_CLUSTER_CONF}|" "$state/lxd-gateway.yaml"
    fi
    if [ -n "${LXDGW_EXTRA_CONF:-}" ]; then
        printf '%s\n' "$LXDGW_EXTRA_CONF" >>"$state/lxd-gateway.yaml"
    fi
    # trusting the same certificate twice is refused by LXD: ignore that case only
    bash "$cluster" lxc node1 config trust add "$state/identity.crt" 2>"$state/trust.err" ||
        grep -qiE "already (exists|in trust store)" "$state/trust.err" || { cat "$state/trust.err" >&2; return 1; }
    setsid ip netns exec "$NS" "$bin" --config "$state/lxd-gateway.yaml" >"$state/gateway.log" 2>&1 </dev/null &
    echo $! >"$state/gateway.pid"
    for _ in $(seq 100); do
        if ip netns exec "$NS" curl -sk --max-time 2 "https://$addr/1.0" | grep -q '"type":"sync"'; then
            echo "gateway $name up on https://$addr (pid $(cat "$state/gateway.pid"), log $state/gateway.log)"
            return 0
        fi
        sleep 0.2
    done
    echo "gateway $name did not come up:" >&2
    tail -20 "$state/gateway.log" >&2
    return 1
}

stop() {
    local pidf="$DIR/$1/gateway.pid"
    [ -s "$pidf" ] || return 0
    kill "$(cat "$pidf")" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$(cat "$pidf")" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$(cat "$pidf")" 2>/dev/null || true
    rm -f "$pidf"
}

# starts a stopped gateway again with the state (and configuration) it has
restart() {
    local name=$1 bin=$2 addr=$3 state="$DIR/$1"
    bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
    setsid ip netns exec "$NS" "$bin" --config "$state/lxd-gateway.yaml" >>"$state/gateway.log" 2>&1 </dev/null &
    echo $! >"$state/gateway.pid"
    for _ in $(seq 100); do
        ip netns exec "$NS" curl -sk --max-time 2 "https://$addr/1.0" | grep -q '"type":"sync"' && return 0
        sleep 0.2
    done
    return 1
}

case "${1:-}" in
start) shift; start "$@" ;;
restart) shift; restart "$@" ;;
stop) shift; stop "$@" ;;
*) echo "usage: $0 start|restart NAME BINARY ADDR | stop NAME" >&2; exit 2 ;;
esac
