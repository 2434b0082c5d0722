#!/usr/bin/env bash
# Starts and stops a standalone Incus daemon (Debian's incus 6.0.4, from bookworm-backports) inside the test
# cluster's network namespace: a backend that natively has the API extension cluster_internal_custom_volume_copy,
# for the gateway's "upgrade path" tests (tests/e2e/test_native.py).
#
#   incus.sh start         start it (idempotent: a healthy daemon is left alone, anything else is replaced)
#   incus.sh stop          kill it, remove its mounts and its directory (idempotent)
#   incus.sh status        exit 0 only if it runs and answers
#   incus.sh incus ARGS    run `incus ARGS` as the daemon's local admin (unix socket)
#
# Environment: LXDGW_NETNS (default lxdgw), LXDGW_CLUSTER_DIR (default /var/tmp/lxdgw-cluster), as cluster.sh;
# LXDGW_INCUS_ADDR (default 127.0.0.21:8443). Needs root, the namespace (cluster.sh up) and the package incus.
#
# INCUS_DIR=$LXDGW_CLUSTER_DIR/incus holds the daemon's state, incusd.{pid,log,out} and the client config
# (client/). The daemon listens on LXDGW_INCUS_ADDR with its own server.crt (INCUS_DIR/server.crt), has a `dir`
# pool pool1 and trusts the test client certificate of cluster.sh (LXDGW_CLUSTER_DIR/client/client.crt).
# As the LXD members, it runs in the namespace's network only and in a private mount namespace (a slave of the
# host's): its mounts (shmounts, guestapi) never show on the host and vanish with it. `cluster.sh down` also
# removes it (it kills whatever names LXDGW_CLUSTER_DIR and deletes that directory).
set -euo pipefail

NS=${LXDGW_NETNS:-lxdgw}
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR=${LXDGW_CLUSTER_DIR:-/var/tmp/lxdgw-cluster}
ADDR=${LXDGW_INCUS_ADDR:-127.0.0.21:8443}
INCUSD=/usr/libexec/incus/incusd
POOL=pool1
READY_TIMEOUT=20 # seconds incusd may take to answer on its unix socket

log() { printf 'incus: %s\n' "$*" >&2; }
die() { printf 'incus: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '6,9s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

check_env() {
    [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, incusd)"
    case "$DIR" in /*) ;; *) die "LXDGW_CLUSTER_DIR must be an absolute path: $DIR" ;; esac
    DIR=${DIR%/}
    [ -n "$DIR" ] || die "refusing LXDGW_CLUSTER_DIR=/"
    [[ "$NS" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "bad LXDGW_NETNS: $NS"
    [[ "$ADDR" =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+$ ]] || die "LXDGW_INCUS_ADDR must be a loopback HOST:PORT: $ADDR"
    IDIR=$DIR/incus
}

# start and stop serialize (two test modules starting it at once must not both build one). fd 9 is closed for
# the daemon.
take_lock() {
    exec 9>"/run/lock/lxdgw-incus.$NS.lock"
    flock -w 60 9 || die "another incus.sh start/stop holds /run/lock/lxdgw-incus.$NS.lock"
}

# the incus client as the daemon's local admin; its config (no remote but the unix socket) stays in IDIR
as_admin() { INCUS_DIR=$IDIR INCUS_CONF=$IDIR/client timeout 30 incus "$@"; }

# pid of the daemon if it is alive and really is ours (pid files outlive reboots and pid reuse)
daemon_pid() { daemon_pid_of "$IDIR/incusd.pid" "$IDIR/incusd.log"; }

# Healthy = started to the end (IDIR/ready), alive, answering, its pool there.
healthy() {
    [ -e "$IDIR/ready" ] && ns_exists && daemon_pid >/dev/null || return 1
    as_admin query "/1.0/storage-pools/$POOL" >/dev/null 2>&1
}

# Every process whose command line names IDIR (incusd, lxc monitors, forkfile, ...) and their descendants.
leftover_pids() {
    # IDIR goes through the environment: on awk's own command line it would make awk match itself.
    ps -e -o pid=,ppid=,args= | IDIR=$IDIR awk -v self="$(self_pids | tr '\n' ' ')" -v me="$$" '
        BEGIN {
            dir = ENVIRON["IDIR"]
            n = split(self, a, " "); for (i = 1; i <= n; i++) skip[a[i]] = 1
        }
        {
            pid = $1; parent[pid] = $2
            args = $0; sub(/^ *[0-9]+ +[0-9]+ /, "", args)
            if (index(args " ", dir "/") || index(args " ", dir " ")) mark[pid] = 1
        }
        END {
            do {
                changed = 0
                for (p in parent) if (!(p in mark) && (parent[p] in mark)) { mark[p] = 1; changed = 1 }
            } while (changed)
            mine[me] = 1
            do {
                changed = 0
                for (p in parent) if (!(p in mine) && (parent[p] in mine)) { mine[p] = 1; changed = 1 }
            } while (changed)
            for (p in mark) if (!(p in skip) && !(p in mine) && (p in parent)) print p
        }'
}

# The mount namespace for the daemon. Called from inside the network namespace (`cluster.sh exec`, i.e.
# `ip netns exec`, as the e2e tests are), this process sees the namespace's own sysfs on /sys, which hides
# /sys/fs/cgroup; the daemon must not inherit that view (incusd then finds no cgroup controllers). It gets the view
# its caller had before `ip netns exec` instead: that of the nearest ancestor in another mount namespace,
# provided it has the cgroup mounts and shows the same DIR.
MNT_ARGS=()
pick_mount_ns() {
    MNT_ARGS=()
    [ -z "$(ls -A /sys/fs/cgroup 2>/dev/null)" ] || return 0
    local me p m
    me=$(readlink "/proc/$$/ns/mnt")
    p=$$
    while p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null) && [ -n "$p" ] && [ "$p" != 0 ]; do
        m=$(readlink "/proc/$p/ns/mnt" 2>/dev/null) || break
        [ "$m" = "$me" ] && continue
        if [ -n "$(ls -A "/proc/$p/root/sys/fs/cgroup" 2>/dev/null)" ] \
            && [ "$(stat -c %d:%i "$DIR")" = "$(stat -c %d:%i "/proc/$p/root$DIR" 2>/dev/null)" ]; then
            MNT_ARGS=(--mount="/proc/$p/ns/mnt")
        fi
        break
    done
    [ "${#MNT_ARGS[@]}" != 0 ] || log "warning: no cgroup mounts in this view; incusd will not see cgroups"
}

# unmounts whatever is mounted under IDIR in this process's view (deepest first)
unmount_under() {
    local m t i
    for i in 1 2 3; do
        mapfile -t m < <(findmnt -rn -o TARGET | awk -v d="$IDIR" 'index($0, d "/") == 1 || $0 == d' | sort -r)
        [ "${#m[@]}" = 0 ] && return 0
        for t in "${m[@]}"; do umount -l "$t" 2>/dev/null || true; done
    done
}

do_stop() {
    local pid pids i
    # Nothing in IDIR survives a stop, so a clean shutdown (about 2 s with SIGTERM) is not worth waiting for.
    if pid=$(daemon_pid); then
        kill -KILL "$pid" 2>/dev/null || true
        # dead once gone or a zombie (its parent, init, reaps it when it gets round to it)
        for i in $(seq 50); do
            if [ ! -d "/proc/$pid" ] || grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then break; fi
            sleep 0.05
        done
    fi
    for i in 1 2 3 4 5 6 7 8 9 10; do
        mapfile -t pids < <(leftover_pids)
        [ "${#pids[@]}" = 0 ] && break
        [ "$i" = 1 ] && log "killing ${#pids[@]} leftover process(es): ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 0.1
    done
    mapfile -t pids < <(leftover_pids)
    [ "${#pids[@]}" = 0 ] || log "warning: processes survived SIGKILL: ${pids[*]}"
    # The daemon's own mounts lived in its private mount namespace and went with it; this catches anything else
    # (e.g. a debugging bind mount). --one-file-system below never follows one that could not be removed.
    if [ -d "$IDIR" ]; then unmount_under; fi
    # liblxc's per-lxcpath lock directories live outside IDIR
    if [ -d "/run/lxc/lock$IDIR" ]; then rm -rf --one-file-system "/run/lxc/lock$IDIR"; fi
    if [ -d "$IDIR" ]; then rm -rf --one-file-system "$IDIR"; fi
    [ ! -e "$IDIR" ] || die "could not remove $IDIR (a mount left in it?)"
}

START_DONE=0
on_start_exit() {
    local rc=$?
    [ "$START_DONE" = 1 ] && return 0
    [ "$rc" != 0 ] || rc=1
    trap - EXIT INT TERM
    set +e
    log "start FAILED (exit $rc); tearing down"
    local f=$IDIR/incusd.out
    [ -s "$f" ] || f=$IDIR/incusd.log
    if [ -s "$f" ]; then
        echo "----- tail of $f -----" >&2
        tail -n 30 "$f" >&2
        echo "-----" >&2
    fi
    do_stop >/dev/null 2>&1
    exit "$rc"
}

cmd_start() {
    ns_exists || die "network namespace $NS does not exist (run: tests/cluster/cluster.sh up)"
    [ -x "$INCUSD" ] || die "$INCUSD missing (install the package incus)"
    take_lock
    if healthy; then
        log "already up (https://$ADDR, INCUS_DIR=$IDIR)"
        return 0
    fi
    if [ -e "$IDIR" ] || daemon_pid >/dev/null; then
        log "found a stale or unhealthy daemon; removing it first"
        do_stop
    fi
    local t0=$EPOCHREALTIME deadline
    trap on_start_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    mkdir -p "$IDIR/client"
    chmod 0711 "$IDIR"
    # only the local unix socket: no public image remote, and no "first time running Incus" banner
    printf 'default-remote: local\nremotes:\n  local:\n    addr: unix://\n    public: false\naliases: {}\n' \
        >"$IDIR/client/config.yml"
    pick_mount_ns
    # As cluster.sh starts lxd (see start_member there): setsid + a small sh that records the daemon's pid and
    # execs; nsenter joins the network namespace (and, from inside `ip netns exec`, the mount namespace from
    # before it, see pick_mount_ns), not `ip netns exec`, whose sysfs hides /sys/fs/cgroup; unshare gives a
    # private mount namespace. PATH as /etc/default/incus sets it.
    # shellcheck disable=SC2016 # $$ and $@ are for the inner sh
    setsid sh -c 'echo $$ >"$0"; exec "$@"' "$IDIR/incusd.pid" \
        nsenter "${MNT_ARGS[@]}" --net="/run/netns/$NS" -- unshare --mount --propagation slave -- \
        env INCUS_DIR="$IDIR" PATH=/usr/libexec/incus:/usr/sbin:/usr/bin:/sbin:/bin \
        "$INCUSD" --group root --verbose --logfile "$IDIR/incusd.log" </dev/null >"$IDIR/incusd.out" 2>&1 9>&- &
    disown $!

    deadline=$((SECONDS + READY_TIMEOUT))
    until [ -S "$IDIR/unix.socket" ] && INCUS_DIR=$IDIR timeout 5 "$INCUSD" waitready --timeout 1 >/dev/null 2>&1; do
        if daemon_exited "$IDIR/incusd.pid"; then
            die "incusd exited during start-up: $(tail -n 5 "$IDIR/incusd.out" "$IDIR/incusd.log" 2>/dev/null | tr '\n' ' ')"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "incusd not ready after ${READY_TIMEOUT}s"
        sleep 0.1
    done

    # images.auto_update_interval 0: no background image refreshes (nothing could reach an image server anyway)
    as_admin config set core.https_address="$ADDR" images.auto_update_interval=0
    as_admin storage create "$POOL" dir >/dev/null
    if [ -s "$DIR/client/client.crt" ]; then
        as_admin config trust add-certificate "$DIR/client/client.crt" --name lxdgw-test-client
    fi
    # the https listener answers from inside the namespace
    nsenter --net="/run/netns/$NS" -- curl -sk --max-time 5 -o /dev/null "https://$ADDR/1.0" \
        || die "https://$ADDR does not answer inside the namespace"
    touch "$IDIR/ready"
    START_DONE=1
    trap - EXIT INT TERM
    log "up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')s: https://$ADDR, INCUS_DIR=$IDIR, server certificate $IDIR/server.crt"
}

cmd_stop() {
    take_lock
    local t0=$EPOCHREALTIME
    do_stop
    log "down in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')s"
}

cmd_status() {
    if healthy; then
        echo "incusd up: https://$ADDR, INCUS_DIR=$IDIR, pid $(daemon_pid)"
        return 0
    fi
    echo "incusd is down or unhealthy ($IDIR)"
    return 1
}

main() {
    [ "$#" -ge 1 ] || usage
    check_env
    local cmd=$1
    shift
    case "$cmd" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        incus)
            [ -S "$IDIR/unix.socket" ] || die "incusd is not running (run: $0 start)"
            INCUS_DIR=$IDIR INCUS_CONF=$IDIR/client exec incus "$@"
            ;;
        *) usage ;;
    esac
}

main "$@"
