#!/usr/bin/env bash
# End-to-end tests against a REAL 3-member LXD 5.0.2 cluster in a private network namespace.
# usage: tests/e2e/run.sh GATEWAY_BINARY [GATEWAY_BINARY...]   (the suite runs once per binary, e.g. normal + ASan)
#
# One binary: its suite runs on the cluster of LXDGW_NETNS / LXDGW_CLUSTER_DIR (cluster.sh's defaults: lxdgw,
# /var/tmp/lxdgw-cluster), its output straight through.
# Several: their suites run AT THE SAME TIME, each on a cluster of its own: the first on that cluster, the Nth on
# netns <netns>N and directory <dir>N (lxdgw2, /var/tmp/lxdgw-cluster2, ...). The clusters come up in parallel; each
# suite writes to a log file of its own (in a fresh /tmp/lxdgw-e2e.XXXXXX, named at the start), printed as one
# labelled block when the suite ends, so the output stays readable. Most of a suite's time is spent waiting on
# LXD (members killed and restarted, settles, heartbeats), so two suites together take little more than one; the
# few modules too heavy to share 2 cores with another suite take turns (tests/e2e/exclusive.py).
# The exit status is non-zero if any suite failed. LXDGW_KEEP_CLUSTER=1 leaves the clusters up.
# LXDGW_E2E_SELECT: what pytest runs, instead of the whole directory (e.g. "tests/e2e/test_copy.py -k cancel").
#
# Two clusters never meet on the host: each has its own namespace (addresses, ports, abstract sockets), its own
# directory (state, unix sockets, the Incus daemon of tests/cluster/incus.sh) and its own lock files, and the tests
# start their gateways, HAProxy and incusd inside their cluster's namespace, with files under pytest's numbered
# (per-run) temporary directories. Instances of the same name in both get distinct host cgroups: liblxc takes
# lxc.payload.NAME-1 when lxc.payload.NAME is in use. AppArmor profiles of LXD instances name the LXD_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cluster="$top/tests/cluster/cluster.sh"
[ $# -ge 1 ] || { echo "usage: $0 GATEWAY_BINARY..." >&2; exit 2; }
keep=${LXDGW_KEEP_CLUSTER:-0}

bins=()
for b in "$@"; do
    [ -x "$b" ] || { echo "e2e: $b is not an executable" >&2; exit 2; }
    bins+=("$(cd "$(dirname "$b")" && pwd)/$(basename "$b")")
done

# the suite of one binary, on the cluster LXDGW_NETNS / LXDGW_CLUSTER_DIR name
suite() {
    bash "$cluster" settle || return # a previous run's crash tests must not leave a half-recovered cluster behind
    # -p exclusive (tests/e2e/exclusive.py): the modules too heavy to share the machine with another suite run alone
    # shellcheck disable=SC2086 # LXDGW_E2E_SELECT is split into pytest's arguments
    bash "$cluster" exec env LXDGW_BINARY="$1" LXDGW_TOP="$top" PYTHONPATH="$here" \
        /usr/bin/python3 -m pytest -p no:cacheprovider -p exclusive -q -x --durations=25 ${LXDGW_E2E_SELECT:-"$here"}
}

if [ ${#bins[@]} = 1 ]; then
    bash "$cluster" up
    cleanup() { [ "$keep" = 1 ] || bash "$cluster" down; }
    trap cleanup EXIT
    echo "=== e2e with ${bins[0]}"
    rc=0
    suite "${bins[0]}" || rc=1
    exit $rc
fi

# ---------------------------------------------------------------------------------------------------
# several binaries: one cluster each, all suites at once

ns0=${LXDGW_NETNS:-lxdgw}
dir0=${LXDGW_CLUSTER_DIR:-/var/tmp/lxdgw-cluster}
dir0=${dir0%/}
nss=() dirs=()
for i in "${!bins[@]}"; do
    if [ "$i" = 0 ]; then
        nss+=("$ns0") dirs+=("$dir0")
    else
        nss+=("$ns0$((i + 1))") dirs+=("$dir0$((i + 1))")
    fi
done
logdir=$(mktemp -d /tmp/lxdgw-e2e.XXXXXX)
t0=$SECONDS

# cluster.sh for cluster I
on_cluster() {
    local i=$1
    shift
    LXDGW_NETNS=${nss[$i]} LXDGW_CLUSTER_DIR=${dirs[$i]} bash "$cluster" "$@"
}

# pids of the running suites (each the leader of a process group of its own: see below), by index
declare -A running=()
finish() {
    local rc=$? i pids=()
    trap - EXIT INT TERM
    set +e
    # interrupted: the suites still running stop (pytest, its gateways, HAProxy, ...) before their clusters go
    for i in "${!running[@]}"; do kill -TERM -- "-${running[$i]}" 2>/dev/null; done
    for i in "${!running[@]}"; do wait "${running[$i]}" 2>/dev/null; done
    if [ "$keep" != 1 ]; then
        for i in "${!bins[@]}"; do
            on_cluster "$i" down 2>&1 | sed "s|^|[${nss[$i]}] |" &
            pids+=("$!")
        done
        for i in "${pids[@]}"; do wait "$i"; done
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# the clusters come up in parallel, each `up`'s few lines labelled with its namespace
ups=()
for i in "${!bins[@]}"; do
    (
        set -o pipefail
        on_cluster "$i" up 2>&1 | sed "s|^|[${nss[$i]}] |"
    ) &
    ups+=("$!")
done
rc=0
for p in "${ups[@]}"; do wait "$p" || rc=1; done
[ "$rc" = 0 ] || { echo "e2e: a cluster did not come up" >&2; exit 1; }
echo "e2e: ${#bins[@]} clusters up in $((SECONDS - t0)) s; the suites run at once, logs in $logdir"

# setsid: each suite leads a process group of its own (a background job of this shell is no group leader, so
# setsid need not fork and $! is that group), which `finish` can stop whole. Its stdin is /dev/null: two suites
# must not share the caller's. Its exit status goes to suiteN.rc when it ends (`wait -n` cannot be used to learn
# which ended: it misses a job that ended while the previous log was being printed).
declare -A started=()
for i in "${!bins[@]}"; do
    log="$logdir/suite$((i + 1)).log"
    LXDGW_NETNS=${nss[$i]} LXDGW_CLUSTER_DIR=${dirs[$i]} \
        setsid bash -c "$(declare -f suite)"'; here=$1 top=$2 cluster=$3; suite "$4"; echo $? >"$5.tmp" && mv "$5.tmp" "$5"' \
        suite "$here" "$top" "$cluster" "${bins[$i]}" "$logdir/suite$((i + 1)).rc" </dev/null >"$log" 2>&1 &
    running[$i]=$!
    started[$i]=$SECONDS
    echo "e2e: started ${bins[$i]} on netns ${nss[$i]} (${dirs[$i]}): $log"
done

# each suite's log as one block, in the order they end
while [ ${#running[@]} -gt 0 ]; do
    sleep 2
    for i in "${!running[@]}"; do
        [ -s "$logdir/suite$((i + 1)).rc" ] || continue
        wait "${running[$i]}" || true
        unset "running[$i]"
        src=$(<"$logdir/suite$((i + 1)).rc")
        if [ "$src" = 0 ]; then verdict=passed; else verdict="FAILED (exit $src)" rc=1; fi
        echo "===== e2e with ${bins[$i]} (netns ${nss[$i]}): $verdict in $((SECONDS - started[$i])) s ====="
        cat "$logdir/suite$((i + 1)).log"
        echo "===== end of e2e with ${bins[$i]}: $verdict ====="
    done
done
echo "e2e: all suites done in $((SECONDS - t0)) s (clusters up included)"
exit $rc
