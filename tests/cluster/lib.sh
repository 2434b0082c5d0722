# shellcheck shell=bash
# Shell functions shared by the test harness scripts (cluster.sh, incus.sh); sourced, not run.
# Needs NS (the network namespace's name).

# the test namespace exists
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF -- "$NS"; }

# pids of this shell and its ancestors: `cluster.sh exec bash` then `... down|stop` must not kill itself
self_pids() {
    local p=$$
    while [ -n "$p" ] && [ "$p" != 0 ]; do
        echo "$p"
        p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    done
}
