#!/usr/bin/env bash
# Starts and stops a real 3-member LXD cluster (Debian 12's LXD 5.0.2) inside a private network namespace,
# for the gateway's integration tests.
#
#   cluster.sh up              start the cluster (idempotent; a healthy cluster is left alone)
#   cluster.sh down            stop everything and delete the network namespace and the state directory
#   cluster.sh status          print the members; exit 0 only if all 3 are ONLINE
#   cluster.sh exec CMD...     run CMD inside the network namespace with $DIR/env exported
#   cluster.sh lxc NODE ARGS   run `lxc ARGS` as the local (unix socket) admin of member NODE
#   cluster.sh kill NODE       SIGKILL member NODE's daemon (a crash, for failover tests)
#   cluster.sh start NODE      start member NODE's daemon again and wait until it answers
#   cluster.sh settle          wait until every member sees all 3 Online and forwards to each other promptly
#
# Environment: LXDGW_NETNS (default lxdgw), LXDGW_CLUSTER_DIR (default /var/tmp/lxdgw-cluster).
# Needs root and the packages lxd, lxd-client, busybox-static, iproute2, util-linux, procps, openssl, jq.
#
# The namespace has only `lo`, so nothing the daemons do (image server look-ups, ...) leaves the machine.
# Each daemon also runs in a private mount namespace (a slave of the host's), so the mounts LXD makes
# (shmounts, devlxd, container rootfs, ...) live and die with it and its containers and never show on the host.
# Members: node1..node3 at 127.0.0.11..13:8443, LXD_DIR=DIR/nodeN. `up` writes DIR/env (KEY=value lines).
set -euo pipefail

NS=${LXDGW_NETNS:-lxdgw}
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR=${LXDGW_CLUSTER_DIR:-/var/tmp/lxdgw-cluster}
NODES=(node1 node2 node3)
declare -A ADDR=([node1]=127.0.0.11 [node2]=127.0.0.12 [node3]=127.0.0.13)
PORT=8443
TRUST_PASSWORD=lxdgw-test
IMAGE_ALIAS=busybox
BUSYBOX=/bin/busybox
READY_TIMEOUT=20 # seconds a daemon may take to answer on its unix socket

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '5,12s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

require_root() { [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, lxd)"; }

# Refuse to work on a directory whose deletion would be a disaster (rm -rf in `down`).
check_dir() {
    case "$DIR" in
        /*) ;;
        *) die "LXDGW_CLUSTER_DIR must be an absolute path: $DIR" ;;
    esac
    case "${DIR%/}" in
        "" | /bin | /boot | /dev | /etc | /home | /lib | /lib64 | /opt | /proc | /root | /run | /sbin | /srv \
            | /sys | /tmp | /usr | /var | /var/tmp | /var/lib | /var/lib/lxd) die "refusing LXDGW_CLUSTER_DIR=$DIR" ;;
    esac
    DIR=${DIR%/}
    [[ "$NS" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "bad LXDGW_NETNS: $NS"
}

# up and down serialize on a lock named after the namespace (two test runners calling `up` at once must not
# both build a cluster). It lives in /run/lock because DIR comes and goes. fd 9 is closed for the daemons.
take_lock() {
    exec 9>"/run/lock/lxdgw-cluster.$NS.lock"
    flock -w 120 9 || die "another cluster.sh up/down holds /run/lock/lxdgw-cluster.$NS.lock"
}

# lxc's own client configuration (remotes, client certificate) is kept inside DIR so the script never touches
# root's ~/.config/lxc, and it disappears with `down`. (`cluster.sh lxc` honours a caller's LXD_CONF.)
LXC_CONF="" # set in main, once DIR is checked

# Runs a command as member NODE's local admin, inside the namespace. The unix socket would work from
# outside too, but `lxc` may also be pointed at https remotes, and those must be reached from inside.
as_member() {
    local node=$1
    shift
    ip netns exec "$NS" env LXD_DIR="$DIR/$node" LXD_CONF="$LXC_CONF" "$@"
}

# pid of NODE's daemon if it is alive and really is that lxd (pid files outlive reboots and pid reuse).
member_pid() { daemon_pid_of "$DIR/$1/lxd.pid" "$DIR/$1/lxd.log"; }

# Number of members reported ONLINE, asked of node1. Bounded so a wedged daemon
# cannot hang `status` or the health check.
online_count() {
    timeout 10 ip netns exec "$NS" env LXD_DIR="$DIR/node1" lxc query '/1.0/cluster/members?recursion=1' 2>/dev/null \
        | jq '[.[] | select(.status == "Online")] | length' 2>/dev/null
}

# Healthy = state directory complete, three daemons alive, three members ONLINE, the test image present.
healthy() {
    local n
    [ -s "$DIR/env" ] && ns_exists || return 1
    for n in "${NODES[@]}"; do member_pid "$n" >/dev/null || return 1; done
    [ "$(online_count)" = 3 ] || return 1
    timeout 10 ip netns exec "$NS" env LXD_DIR="$DIR/node1" lxc query "/1.0/images/aliases/$IMAGE_ALIAS" \
        >/dev/null 2>&1 || return 1
}

# ---------------------------------------------------------------------------------------------------
# up

CUR_NODE=""  # the member being worked on, whose log is shown if `up` fails
UP_DONE=0

on_up_exit() {
    local rc=$?
    [ "$UP_DONE" = 1 ] && return 0
    [ "$rc" != 0 ] || rc=1
    trap - EXIT INT TERM
    set +e
    log "up FAILED (exit $rc)${CUR_NODE:+ while working on $CUR_NODE}; tearing down"
    if [ -n "$CUR_NODE" ]; then
        # lxd.out repeats the log (--verbose) plus anything printed before the log file was open.
        local f=$DIR/$CUR_NODE/lxd.out
        [ -s "$f" ] || f=$DIR/$CUR_NODE/lxd.log
        if [ -s "$f" ]; then
            echo "----- tail of $f -----" >&2
            tail -n 30 "$f" >&2
            echo "-----" >&2
        fi
    fi
    do_down >/dev/null 2>&1
    log "up failed; everything it started has been removed"
    exit "$rc"
}

start_member() {
    local node=$1 d=$DIR/$1
    mkdir -p "$d"
    chmod 0711 "$d"
    # setsid: the daemon gets its own session, so it survives the calling shell and its terminal.
    # The small sh records its own pid then execs (nsenter, unshare and env exec too), so the pid file holds
    # lxd's pid whether or not setsid had to fork. stdout/stderr catch errors from before the log is open.
    # Not `ip netns exec`: it mounts a fresh sysfs on /sys, which hides /sys/fs/cgroup, and liblxc then
    # fails every container start ("Failed to setup cgroup limits"). nsenter joins only the network
    # namespace; unshare gives the daemon a private mount namespace (slave: host mounts propagate in,
    # LXD's shmounts/devlxd/rootfs mounts never propagate out and vanish with the daemon and its containers).
    # 9>&-: the daemon must not inherit (and so hold forever) the lock taken by take_lock.
    # shellcheck disable=SC2016 # $$ and $@ are for the inner sh
    setsid sh -c 'echo $$ >"$0"; exec "$@"' "$d/lxd.pid" \
        nsenter --net="/run/netns/$NS" -- unshare --mount --propagation slave -- env LXD_DIR="$d" \
        lxd --group root --verbose --logfile "$d/lxd.log" </dev/null >"$d/lxd.out" 2>&1 9>&- &
    # Not a job of this shell: no "Killed" notices, and no bare `wait` can block on a daemon.
    disown $!
}

# Waits until NODE answers on its unix socket; fails fast if the daemon died instead of waiting out a timeout.
wait_member() {
    local node=$1 deadline=$((SECONDS + READY_TIMEOUT))
    while :; do
        if [ -S "$DIR/$node/unix.socket" ] \
            && LXD_DIR="$DIR/$node" timeout 5 lxd waitready --timeout 1 >/dev/null 2>&1; then
            return 0
        fi
        if daemon_exited "$DIR/$node/lxd.pid"; then
            CUR_NODE=$node
            die "$node: lxd exited during start-up"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            CUR_NODE=$node
            die "$node: lxd not ready after ${READY_TIMEOUT}s"
        fi
        sleep 0.1
    done
}

# Two client identities: one the cluster trusts, one it does not (for the untrusted-caller paths).
make_client_cert() {
    local d=$1 cn=$2
    mkdir -p "$d"
    # Self-signed EC P-256, clientAuth usage: LXD accepts any self-signed client certificate and
    # identifies the caller by its SHA-256 fingerprint.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 3650 \
        -subj "/CN=$cn" -addext "extendedKeyUsage=clientAuth" \
        -keyout "$d/client.key" -out "$d/client.crt" >/dev/null 2>&1
    chmod 0600 "$d/client.key"
}

# A minimal unified image: metadata.yaml + rootfs/ made from Debian's static busybox. Built once per DIR.
build_image() {
    local out=$DIR/cache/busybox.tar.gz b r
    [ -s "$out" ] && return 0
    [ -x "$BUSYBOX" ] || die "$BUSYBOX missing (install the busybox-static package)"
    b=$(mktemp -d "$DIR/cache.XXXXXX")
    r=$b/rootfs
    mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,run,root,var/log}
    chmod 1777 "$r/tmp"
    cp "$BUSYBOX" "$r/bin/busybox"
    # One symlink per applet (busybox --list-full prints paths such as bin/sh, usr/bin/env).
    local a
    while read -r a; do
        [ -n "$a" ] && [ "$a" != bin/busybox ] && [ ! -e "$r/$a" ] && ln -s /bin/busybox "$r/$a"
    done < <("$BUSYBOX" --list-full)
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
    printf 'root:x:0:\n' >"$r/etc/group"
    printf 'busybox\n' >"$r/etc/hostname"
    # /sbin/init: a shell that writes to the console (so `lxc console --show-log` has something to show) and
    # sleeps. It exits on SIGPWR, the signal LXC uses for a clean `lxc stop`, so stops take no timeout.
    # (busybox init would need an inittab and respawns a getty nobody uses; this is all the tests need.)
    rm -f "$r/sbin/init"
    cat >"$r/sbin/init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "lxdgw-busybox: init started on $(hostname)"
trap 'echo "lxdgw-busybox: stopping"; kill $! 2>/dev/null; exit 0' PWR TERM INT
while :; do
    sleep 3600 &
    wait $!
done
EOF
    chmod 0755 "$r/sbin/init"
    cat >"$b/metadata.yaml" <<EOF
architecture: x86_64
creation_date: $(date +%s)
properties:
  description: busybox $("$BUSYBOX" 2>&1 | head -n1 | awk '{print $2}') (lxd-gateway tests)
  os: busybox
  release: static
EOF
    tar --numeric-owner --owner=0 --group=0 -C "$b" -czf "$b/image.tar.gz" metadata.yaml rootfs
    mkdir -p "$DIR/cache"
    mv "$b/image.tar.gz" "$out"
    rm -rf "$b"
}

# KEY=value, double-quoted only when needed (LXDGW_MEMBERS has spaces), so both a shell and a simple
# line parser (a C test, systemd's EnvironmentFile) read the same value.
env_line() {
    case "$2" in
        *[!A-Za-z0-9_./:@=+-]*)
            case "$2" in *[\"\$\`\\]*) die "cannot write $1 to the env file: $2" ;; esac
            printf '%s="%s"\n' "$1" "$2"
            ;;
        *) printf '%s=%s\n' "$1" "$2" ;;
    esac
}

write_env() {
    local tmp=$DIR/env.tmp
    {
        env_line LXDGW_NETNS "$NS"
        env_line LXDGW_CLUSTER_DIR "$DIR"
        env_line LXDGW_MEMBERS "https://${ADDR[node1]}:$PORT https://${ADDR[node2]}:$PORT https://${ADDR[node3]}:$PORT"
        env_line LXDGW_CLUSTER_CERT "$DIR/cluster.crt"
        env_line LXDGW_CLIENT_CERT "$DIR/client/client.crt"
        env_line LXDGW_CLIENT_KEY "$DIR/client/client.key"
        env_line LXDGW_UNTRUSTED_CERT "$DIR/untrusted/client.crt"
        env_line LXDGW_UNTRUSTED_KEY "$DIR/untrusted/client.key"
        env_line LXDGW_TRUST_PASSWORD "$TRUST_PASSWORD"
    } >"$tmp"
    mv "$tmp" "$DIR/env" # written last and atomically: its presence is part of "healthy"
}

cmd_up() {
    require_root
    take_lock
    if healthy; then
        log "already up ($DIR, netns $NS)"
        return 0
    fi
    if [ -e "$DIR" ] || ns_exists; then
        log "found a stale or unhealthy cluster; tearing it down first"
        do_down
    fi
    local t0=$EPOCHREALTIME n token
    trap on_up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    mkdir -p "$DIR" "$LXC_CONF"
    chmod 0711 "$DIR"
    # A client config with only the local unix socket: no public image remote (nothing leaves the namespace)
    # and no "first time running LXD" banner on stderr.
    [ -e "$LXC_CONF/config.yml" ] || printf 'default-remote: local\nremotes:\n  local:\n    addr: unix://\n    public: false\naliases: {}\n' \
        >"$LXC_CONF/config.yml"
    ip netns add "$NS"
    ip netns exec "$NS" ip link set lo up

    for n in "${NODES[@]}"; do start_member "$n"; done
    # Work that needs no daemon overlaps with their start-up.
    make_client_cert "$DIR/client" lxdgw-test-client
    make_client_cert "$DIR/untrusted" lxdgw-untrusted
    build_image
    for n in "${NODES[@]}"; do wait_member "$n"; done

    CUR_NODE=node1
    # Bootstrap. Containers run without a NIC, so no network/bridge is created. Containers stay unprivileged
    # (LXD's default): Debian's lxd package gives root a /etc/subuid + /etc/subgid range, which is all they need.
    # images.auto_update_interval 0: no background image refreshes.
    as_member node1 lxd init --preseed <<EOF
config:
  core.https_address: ${ADDR[node1]}:$PORT
  core.trust_password: $TRUST_PASSWORD
  images.auto_update_interval: "0"
storage_pools:
- name: pool1
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: pool1
      type: disk
cluster:
  server_name: node1
  enabled: true
EOF

    # Joins go one at a time: each changes the raft membership.
    for n in node2 node3; do
        CUR_NODE=node1
        token=$(as_member node1 lxc cluster add "$n" --quiet)
        [ -n "$token" ] || die "node1 returned an empty join token for $n"
        CUR_NODE=$n
        as_member "$n" lxd init --preseed <<EOF
cluster:
  enabled: true
  server_name: $n
  server_address: ${ADDR[$n]}:$PORT
  cluster_token: $token
  member_config:
  - entity: storage-pool
    name: pool1
    key: source
    value: ""
EOF
    done

    CUR_NODE=node1
    # Set the cluster-wide keys again now that all members are in: a member that joined keeps the (empty)
    # copy it loaded before joining, so its GET /1.0 would lack them (core.trust_password: true, ...) until
    # the next config change notifies it. The values are unchanged; the notification is what matters.
    as_member node1 lxc config set core.trust_password="$TRUST_PASSWORD" images.auto_update_interval=0
    as_member node1 lxc config trust add "$DIR/client/client.crt" --name lxdgw-test-client
    as_member node1 lxc image import "$DIR/cache/busybox.tar.gz" --alias "$IMAGE_ALIAS" --quiet >/dev/null
    cp "$DIR/node1/cluster.crt" "$DIR/cluster.crt"

    CUR_NODE=""
    [ "$(online_count)" = 3 ] || die "not all 3 members are ONLINE after joining"
    write_env
    UP_DONE=1
    trap - EXIT INT TERM
    log "up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')s: ${ADDR[node1]} ${ADDR[node2]} ${ADDR[node3]} (port $PORT), netns $NS; env in $DIR/env"
}

# ---------------------------------------------------------------------------------------------------
# down

# Every process belonging to the cluster: whatever runs in the namespace, anything whose command line names
# DIR (lxd, `[lxc monitor] DIR/nodeN/containers c1`, lxd forkexec/forkconsole, ...), and all their
# descendants (the containers' own processes, which live in other namespaces and name nothing of DIR).
# Spared: this script, its ancestors (`cluster.sh exec bash` then `down`) and its own helpers (ps, awk, sleep
# run inside the namespace when `down` itself was started there).
cluster_pids() {
    local seeds=""
    if ns_exists; then seeds=$(ip netns pids "$NS" 2>/dev/null | tr '\n' ' '); fi
    # DIR goes through the environment: on awk's own command line it would make awk match itself.
    ps -e -o pid=,ppid=,args= | CLUSTER_DIR=$DIR awk -v seeds="$seeds" -v self="$(self_pids | tr '\n' ' ')" \
        -v me="$$" '
        BEGIN {
            dir = ENVIRON["CLUSTER_DIR"]
            n = split(seeds, a, " "); for (i = 1; i <= n; i++) mark[a[i]] = 1
            n = split(self, a, " "); for (i = 1; i <= n; i++) skip[a[i]] = 1
        }
        {
            pid = $1; parent[pid] = $2
            args = $0; sub(/^ *[0-9]+ +[0-9]+ /, "", args)
            if (index(args " ", dir "/") || index(args " ", dir " ")) mark[pid] = 1
        }
        END {
            do {                                  # close the set over parent -> child
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

do_down() {
    local n pid pids=() alive=() waits=() i t
    if [ -d "$DIR" ]; then
        for n in "${NODES[@]}"; do
            if pid=$(member_pid "$n"); then alive+=("$n"); pids+=("$pid"); fi
        done
        if [ "${#alive[@]}" -gt 0 ] && [ -S "$DIR/${alive[0]}/unix.socket" ]; then
            # Stop every instance of the cluster first, forcefully: nothing in them is worth a clean stop,
            # and `lxd shutdown` would otherwise wait for each (boot.host_shutdown_timeout, 30 s by default).
            timeout 20 ip netns exec "$NS" env LXD_DIR="$DIR/${alive[0]}" LXD_CONF="$LXC_CONF" \
                lxc stop --all --force >/dev/null 2>&1 || true
        fi
        # Clean daemon shutdowns, all at once, briefly: whichever member is last loses raft quorum and then
        # waits about 10 s on dqlite before it exits. Nothing in DIR survives `down`, so a clean database
        # close is not worth waiting for.
        for n in "${alive[@]}"; do
            LXD_DIR="$DIR/$n" timeout 5 lxd shutdown --timeout 3 >/dev/null 2>&1 &
            waits+=("$!")
        done
        for pid in "${waits[@]}"; do wait "$pid" || true; done
        # Whatever is still alive gets SIGTERM (LXD then stops without touching instances), then SIGKILL.
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for i in $(seq 1 20); do
            t=0
            for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && t=1; done
            [ "$t" = 0 ] && break
            sleep 0.1
        done
        for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    fi

    # Leftovers: lxc monitors, container payloads, forkexec helpers, shells in the namespace.
    for i in 1 2 3 4 5 6 7 8 9 10; do
        mapfile -t pids < <(cluster_pids)
        [ "${#pids[@]}" = 0 ] && break
        [ "$i" = 1 ] && log "killing ${#pids[@]} leftover process(es): ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 0.2
    done
    mapfile -t pids < <(cluster_pids)
    [ "${#pids[@]}" = 0 ] || log "warning: processes survived SIGKILL: ${pids[*]}"

    # Mounts under DIR in the host's view, deepest first. The daemons' own mounts were made in their private
    # mount namespaces (see start_member) and went away with them and their containers, and `ip netns exec`
    # keeps no mount namespace of its own; this catches anything else (e.g. a debugging bind mount).
    if [ -d "$DIR" ]; then
        local m
        for i in 1 2 3; do
            mapfile -t m < <(findmnt -rn -o TARGET | awk -v d="$DIR" 'index($0, d "/") == 1 || $0 == d' | sort -r)
            [ "${#m[@]}" = 0 ] && break
            for t in "${m[@]}"; do umount -l "$t" 2>/dev/null || true; done
        done
    fi

    if ns_exists; then ip netns delete "$NS"; fi
    # liblxc keeps per-lxcpath lock directories (/run/lxc/lock/<DIR>/nodeN/containers) outside DIR.
    if [ -d "/run/lxc/lock$DIR" ]; then
        rm -rf --one-file-system "/run/lxc/lock$DIR"
        rmdir -p --ignore-fail-on-non-empty "$(dirname "/run/lxc/lock$DIR")" 2>/dev/null || true
    fi
    if [ -d "$DIR" ]; then
        # --one-file-system: never follow a mount we failed to remove out of DIR.
        rm -rf --one-file-system "$DIR"
    fi
}

cmd_down() {
    require_root
    take_lock
    do_down
    log "down"
}

# ---------------------------------------------------------------------------------------------------

cmd_status() {
    require_root
    if [ ! -S "$DIR/node1/unix.socket" ] || ! ns_exists || ! member_pid node1 >/dev/null; then
        echo "cluster is down ($DIR, netns $NS)"
        return 1
    fi
    timeout 10 ip netns exec "$NS" env LXD_DIR="$DIR/node1" LXD_CONF="$LXC_CONF" lxc cluster list || true
    # LXD keeps calling a dead member ONLINE until cluster.offline_threshold (20 s) has passed, so each
    # daemon is also checked directly: process alive and answering on its unix socket.
    local n c bad=0
    for n in "${NODES[@]}"; do
        if ! member_pid "$n" >/dev/null; then
            echo "$n: lxd process not running"
            bad=1
        elif ! LXD_DIR="$DIR/$n" timeout 5 lxd waitready --timeout 3 >/dev/null 2>&1; then
            echo "$n: lxd not answering"
            bad=1
        fi
    done
    c=$(online_count || true)
    if [ "$c" = 3 ] && [ "$bad" = 0 ]; then
        echo "all 3 members ONLINE"
        return 0
    fi
    echo "NOT healthy: LXD reports ${c:-0} of 3 members ONLINE"
    return 1
}

cmd_exec() {
    require_root
    [ "$#" -gt 0 ] || usage
    if [ ! -s "$DIR/env" ] || ! ns_exists; then die "cluster is not up (run: $0 up)"; fi
    set -a
    # shellcheck source=/dev/null
    . "$DIR/env"
    set +a
    exec ip netns exec "$NS" "$@"
}

cmd_lxc() {
    require_root
    [ "$#" -ge 1 ] || usage
    local node=$1
    shift
    [ -n "${ADDR[$node]:-}" ] || die "unknown member '$node' (node1, node2, node3)"
    if ! ns_exists || [ ! -S "$DIR/$node/unix.socket" ]; then die "$node is not running (run: $0 up)"; fi
    exec ip netns exec "$NS" env LXD_DIR="$DIR/$node" LXD_CONF="${LXD_CONF:-$LXC_CONF}" lxc "$@"
}

# A crash of one member: its daemon dies at once, its connections are reset.
cmd_kill() {
    local node=${1:-} pid
    [ -n "${ADDR[$node]:-}" ] || die "unknown member '$node' (node1, node2, node3)"
    pid=$(member_pid "$node") || die "$node is not running"
    kill -9 "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    die "$node: pid $pid still alive after SIGKILL"
}

cmd_start() {
    local node=${1:-}
    [ -n "${ADDR[$node]:-}" ] || die "unknown member '$node' (node1, node2, node3)"
    ns_exists || die "the cluster is not up (run: $0 up)"
    if member_pid "$node" >/dev/null; then return 0; fi
    start_member "$node"
    wait_member "$node"
}

# After a crash and restart, LXD needs a while more than "ONLINE": members keep calling a restarted one Offline
# for a heartbeat or two, and forwarding to it is slow. Tests that follow must not inherit that.
cmd_settle() {
    # the condition must hold for STABLE seconds in a row: a restarted member is declared Offline by the next
    # heartbeat round (seen ~6 s after it answers again, for ~10 s), after every check had passed
    local deadline=$((SECONDS + 120)) since=-1 ok n m stable=${LXDGW_SETTLE_SECONDS:-15}
    while [ "$SECONDS" -lt "$deadline" ]; do
        ok=1
        for n in "${NODES[@]}"; do
            [ "$(timeout 5 ip netns exec "$NS" env LXD_DIR="$DIR/$n" lxc query '/1.0/cluster/members?recursion=1' 2>/dev/null |
                jq '[.[] | select(.status == "Online")] | length' 2>/dev/null)" = 3 ] || ok=0
            for m in "${NODES[@]}"; do
                timeout 3 ip netns exec "$NS" env LXD_DIR="$DIR/$n" lxc query "/1.0?target=$m" >/dev/null 2>&1 || ok=0
            done
        done
        if [ "$ok" = 0 ]; then
            since=-1
        elif [ "$since" -lt 0 ]; then
            since=$SECONDS
        elif [ $((SECONDS - since)) -ge "$stable" ]; then
            return 0
        fi
        sleep 1
    done
    die "the cluster did not settle within 120 s"
}

main() {
    [ "$#" -ge 1 ] || usage
    check_dir
    LXC_CONF=$DIR/lxc-conf
    local cmd=$1
    shift
    case "$cmd" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        exec) cmd_exec "$@" ;;
        lxc) cmd_lxc "$@" ;;
        kill) cmd_kill "$@" ;;
        start) cmd_start "$@" ;;
        settle) cmd_settle ;;
        -h | --help | help) usage ;;
        *) usage ;;
    esac
}

main "$@"
