#!/usr/bin/env bash
# `make install-check`: installs into a scratch DESTDIR and checks what landed where, and that the man page renders
# without a single groff warning. Needs build/lxd-gateway.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
make -s -C "$top" install DESTDIR="$dest" PREFIX=/usr/local >/dev/null
fail=0
check() { # PATH MODE
    local f="$dest$1" mode
    if [ ! -f "$f" ]; then echo "install-check: missing $1" >&2; fail=1; return; fi
    mode=$(stat -c %a "$f")
    [ "$mode" = "$2" ] || { echo "install-check: $1 has mode $mode, not $2" >&2; fail=1; }
}
check /usr/local/bin/lxd-gateway 755
check /usr/local/share/man/man8/lxd-gateway.8 644
check /etc/systemd/system/lxd-gateway.service 644
check /etc/lxd-gateway/lxd-gateway.yaml.example 644
"$dest/usr/local/bin/lxd-gateway" --version | grep -q '^lxd-gateway ' || { echo "install-check: binary does not run" >&2; fail=1; }
grep -q '^ExecStart=/usr/local/bin/lxd-gateway --config /etc/lxd-gateway/lxd-gateway.yaml$' \
    "$dest/etc/systemd/system/lxd-gateway.service" || { echo "install-check: unit does not start the installed binary" >&2; fail=1; }
warnings=$(groff -man -ww -z "$dest/usr/local/share/man/man8/lxd-gateway.8" 2>&1)
[ -z "$warnings" ] || { echo "install-check: groff: $warnings" >&2; fail=1; }
man -l "$dest/usr/local/share/man/man8/lxd-gateway.8" 2>/dev/null | grep -q 'moves.journal' ||
    { echo "install-check: the man page does not render" >&2; fail=1; }
[ "$fail" = 0 ] && echo "install-check: 4 files installed, man page clean"
exit "$fail"
