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

# pids of this shell and its ancestors: `cluster.sh exec bash` then `... down|stop` must not kill itself
self_pids() {
    local p=$$
    while [ -n "$p" ] && [ "$p" != 0 ]; do
        echo "$p"
        p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    done
}
