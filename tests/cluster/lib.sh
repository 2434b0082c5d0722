# shellcheck shell=bash
# Shell functions shared by the test harness scripts (cluster.sh, incus.sh); sourced, not run.
# Needs NS (the network namespace's name).

# the test namespace exists
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF -- "$NS"; }

# the pid in PIDFILE if that process is alive and really is the daemon that logs to LOGFILE (pid files outlive
# reboots and pid reuse)
daemon_pid_of() {
    local pf=$1 log=$2 pid
    [ -s "$pf" ] || return 1
    pid=$(<"$pf")
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--logfile $log" || return 1
    echo "$pid"
}

# the daemon started with its pid in PIDFILE has exited (its process is gone, or a zombie): for start-up loops. Not
# daemon_pid_of, whose /proc/PID/cmdline reads empty for an instant while the starter execs its way to the daemon
# (sh -> nsenter -> unshare -> env -> daemon): a start that was going well was once taken for a dead one there
daemon_exited() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] || return 1
    [ ! -e "/proc/$pid" ] || grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# pids of this shell and its ancestors: `cluster.sh exec bash` then `... down|stop` must not kill itself
self_pids() {
    local p=$$
    while [ -n "$p" ] && [ "$p" != 0 ]; do
        echo "$p"
        p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    done
}
