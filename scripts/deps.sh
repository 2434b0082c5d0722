#!/usr/bin/env bash
# Installs every Debian 12 package the build, tests, demo and bench need. Idempotent.
# As a non-root user it prints the commands instead of running them.
set -euo pipefail

# what building the gateway needs (`scripts/deps.sh --build`: only these, for `make install`)
BUILD_PKGS=(build-essential pkg-config libh2o-evloop-dev libcurl4-openssl-dev libjansson-dev libssl-dev libwslay-dev
            libyaml-dev)
PKGS=("${BUILD_PKGS[@]}" clang-format clang libclang-rt-14-dev
      lxd lxd-client busybox-static haproxy curl openssl iproute2 jq python3 python3-pytest python3-cryptography wrk procps
      python3-pylxd ansible)
BPO_PKGS=(incus-client incus)
if [ "${1:-}" = --build ]; then
    PKGS=("${BUILD_PKGS[@]}")
    BPO_PKGS=()
fi

missing() { # prints the packages of "$@" that dpkg does not report installed
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
    done
}

# bookworm-backports is derived from the machine's own Debian sources entry (same mirror, same key), so
# no mirror host is written into this repository.
BPO_FILE=/etc/apt/sources.list.d/lxd-gateway-backports.sources
derive_backports() {
    local src=/etc/apt/sources.list.d/debian.sources
    if [ -f "$src" ]; then
        awk 'BEGIN{RS="";ORS="\n\n"} /Suites:[^\n]*bookworm( |\n|$)/ && !/security/ {
               n=split($0,l,"\n"); out="";
               for(i=1;i<=n;i++){ if(l[i] ~ /^Suites:/) l[i]="Suites: bookworm-backports";
                                  if(l[i] !~ /^#/) out=out l[i] "\n" }
               printf "%s\n", out; exit }' "$src"
    elif [ -f /etc/apt/sources.list ]; then
        awk '$1=="deb" && $3=="bookworm" {print "Types: deb\nURIs: " $2 "\nSuites: bookworm-backports\nComponents: main\n"; exit}' \
            /etc/apt/sources.list
    fi
}

need=$(missing "${PKGS[@]}" "${BPO_PKGS[@]}")
if [ -z "$need" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: not root; as root, add bookworm-backports (a copy of your Debian sources entry with"
    echo "      'Suites: bookworm-backports') and run:"
    echo "  apt-get update && apt-get install -y --no-install-recommends $need"
    exit 1
fi
if [ ${#BPO_PKGS[@]} -gt 0 ] && [ ! -f "$BPO_FILE" ]; then
    entry=$(derive_backports)
    [ -n "$entry" ] || { echo "deps: cannot derive a bookworm-backports entry from the Debian sources" >&2; exit 1; }
    printf '%s\n' "$entry" >"$BPO_FILE"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $(missing "${PKGS[@]}")
bpo=$(missing "${BPO_PKGS[@]}")
[ -z "$bpo" ] || apt-get install -y -q --no-install-recommends -t bookworm-backports $bpo
