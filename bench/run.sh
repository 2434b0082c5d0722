#!/usr/bin/env bash
# `make bench`: the gateway against direct access to a member and against HAProxy, measured in the same run on the
# real test cluster. Everything runs inside the cluster's network namespace (loopback only); every loop is bounded.
#
#   API:  GET /1.0 and GET /1.0/instances?recursion=1 at fixed concurrency for a fixed time, with the trusted client
#         certificate: req/s, p50/p99 latency, proxy CPU seconds per 10k requests; ratios gateway/direct and
#         gateway/haproxy. HAProxy terminates TLS and re-encrypts to the member with the same client certificate
#         (one thread, as the gateway has one event loop).
#   Push: `lxc file push` of 1 GiB through the gateway and directly: wall time ratio, gateway peak RSS.
#   Copy: a 1 GiB custom volume from node1 to node2: the single call through the gateway (`incus`, which uses the
#         extension the gateway adds) against the 3-call path run directly against the members (`lxc` 5.0.2);
#         two rounds, alternating; wall time ratio of the best of each.
#   Move: the same volume moved between node1 and node2: the single call through the gateway (raw API POST + wait
#         on the gateway's operation; data relayed through the gateway, see gateway/relay.h) against `lxc` 5.0.2's
#         move run directly (3-call copy + DELETE); two rounds each, alternating directions.
set -euo pipefail
# shellcheck source=../scripts/common.sh
source "$(dirname "$0")/../scripts/common.sh"
CONC=${BENCH_CONCURRENCY:-16}
SECS=${BENCH_SECONDS:-10}
PUSH_MIB=${BENCH_PUSH_MIB:-1024}
COPY_MIB=${BENCH_COPY_MIB:-1024}
out="$top/build/bench"
mkdir -p "$out"

cc -O2 -Wall -Wextra -Werror -o "$out/loadgen" "$top/bench/loadgen.c" -lcurl
bash "$cluster" up
# shellcheck disable=SC1091
source "$DIR/env"
nsx() { ip netns exec "$NS" "$@"; }

cleanup() {
    [ -s "$out/haproxy.pid" ] && kill "$(cat "$out/haproxy.pid")" 2>/dev/null || true
    bash "$ctl" stop bench-gw || true
    nsx env LXD_CONF="$out/lxc" lxc delete -f direct:bench-c1 >/dev/null 2>&1 || true
    for v in bench-v bench-v-direct bench-v-gw; do
        for n in node1 node2; do bash "$cluster" lxc "$n" storage volume delete pool1 "$v" --target "$n" >/dev/null 2>&1 || true; done
    done
    [ "${LXDGW_KEEP_CLUSTER:-0}" = 1 ] || bash "$cluster" down
}
trap cleanup EXIT

bash "$ctl" start bench-gw "$top/build/lxd-gateway" 127.0.0.1:8443
gw_pid=$(cat "$DIR/bench-gw/gateway.pid")
gw_pid=$(pgrep -P "$gw_pid" lxd-gateway || echo "$gw_pid") # `ip netns exec` may stay as the parent

# HAProxy: TLS in (the gateway's own server certificate), TLS out with the test client's certificate.
cat "$DIR/bench-gw/server.crt" "$DIR/bench-gw/server.key" >"$out/haproxy-server.pem"
cat "$LXDGW_CLIENT_CERT" "$LXDGW_CLIENT_KEY" >"$out/haproxy-client.pem"
cat >"$out/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 1000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:9443 ssl crt $out/haproxy-server.pem
    default_backend members
backend members
    http-reuse always
    server node1 127.0.0.11:8443 ssl verify none crt $out/haproxy-client.pem
CFG
nsx haproxy -f "$out/haproxy.cfg" -D -p "$out/haproxy.pid"
sleep 0.5
hap_pid=$(head -1 "$out/haproxy.pid")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# run NAME URL PID(or -): prints "rps p50 p99 cpu_s_per_10k"
run() {
    local url=$2 pid=$3 c0 c1 line
    nsx "$out/loadgen" "$url" "$LXDGW_CLIENT_CERT" "$LXDGW_CLIENT_KEY" "$CONC" 2 >/dev/null || true # warm-up
    [ "$pid" = - ] || c0=$(cpu_ticks "$pid")
    line=$(nsx "$out/loadgen" "$url" "$LXDGW_CLIENT_CERT" "$LXDGW_CLIENT_KEY" "$CONC" "$SECS")
    [ "$pid" = - ] || c1=$(cpu_ticks "$pid")
    echo "$1: $line" >>"$out/raw.txt"
    awk -v l="$line" -v c0="${c0:-0}" -v c1="${c1:-0}" -v tck="$TCK" -v pid="$pid" 'BEGIN{
        n=split(l,f," "); for(i=1;i<=n;i++){split(f[i],kv,"="); v[kv[1]]=kv[2]}
        if (v["errors"]+0 > 0) { print "ERRORS " v["errors"] > "/dev/stderr" }
        cpu = pid=="-" ? "-" : sprintf("%.3f", (c1-c0)/tck / v["requests"] * 10000)
        printf "%s %s %s %s\n", v["rps"], v["p50_ms"], v["p99_ms"], cpu }'
}

: >"$out/raw.txt"
printf '\n%-36s %10s %9s %9s %14s\n' "target" "req/s" "p50 ms" "p99 ms" "cpu s/10k req"
declare -A R
for path in "/1.0" "/1.0/instances?recursion=1"; do
    for t in direct gateway haproxy; do
        case $t in
        direct) url="https://127.0.0.11:8443$path" pid=- ;;
        gateway) url="https://127.0.0.1:8443$path" pid=$gw_pid ;;
        haproxy) url="https://127.0.0.1:9443$path" pid=$hap_pid ;;
        esac
        read -r rps p50 p99 cpu < <(run "$t $path" "$url" "$pid")
        R["$t$path"]=$rps
        printf '%-36s %10s %9s %9s %14s\n' "$t $path" "$rps" "$p50" "$p99" "$cpu"
    done
    awk -v g="${R[gateway$path]}" -v d="${R[direct$path]}" -v h="${R[haproxy$path]}" -v p="$path" \
        'BEGIN{printf "  ratio %s: gateway/direct %.2f, gateway/haproxy %.2f (req/s)\n", p, g/d, g/h}'
done

# 1 GiB file push, through the gateway and directly, into one container
export LXD_CONF="$out/lxc"
rm -rf "$LXD_CONF" # remotes pinned to an earlier cluster's certificate would be refused
mkdir -p "$LXD_CONF"
cp "$LXDGW_CLIENT_CERT" "$LXD_CONF/client.crt"
cp "$LXDGW_CLIENT_KEY" "$LXD_CONF/client.key"
nsx lxc remote add direct https://127.0.0.11:8443 --accept-certificate >/dev/null 2>&1 || true
nsx lxc remote add gw https://127.0.0.1:8443 --accept-certificate >/dev/null 2>&1 || true
nsx lxc launch direct:busybox direct:bench-c1 --target node1 >"$out/launch.log" 2>&1 || { cat "$out/launch.log" >&2; exit 1; }
head -c $((PUSH_MIB << 20)) /dev/urandom >"$out/push.bin"
# peak resident memory of the gateway during its push, split: anonymous (heap: what the gateway holds) and
# file-backed (page cache of h2o's spill file under state_dir, which the kernel can write back and drop)
sample_rss() {
    local a=0 f=0 x y
    while [ ! -e "$out/push.done" ]; do
        x=$(awk '/RssAnon/{print $2}' "/proc/$gw_pid/status"); y=$(awk '/RssFile/{print $2}' "/proc/$gw_pid/status")
        [ "$x" -gt "$a" ] && a=$x
        [ "$y" -gt "$f" ] && f=$y
        sleep 0.1
    done
    echo "$a $f" >"$out/rss.peak"
}
t0=$(date +%s.%N); nsx lxc file push -q "$out/push.bin" direct:bench-c1/root/direct.bin; t1=$(date +%s.%N)
rm -f "$out/push.done"; sample_rss & sampler=$!
nsx lxc file push -q "$out/push.bin" gw:bench-c1/root/gw.bin; t2=$(date +%s.%N)
touch "$out/push.done"; wait $sampler
read -r anon file <"$out/rss.peak"
rm -f "$out/push.bin" "$out/push.done"
awk -v a="$t0" -v b="$t1" -v c="$t2" -v an="$anon" -v fi="$file" -v m="$PUSH_MIB" 'BEGIN{
    printf "\nfile push %d MiB: direct %.2f s, gateway %.2f s, ratio gateway/direct %.2f\n", m, b-a, c-b, (c-b)/(b-a)
    printf "gateway peak RSS during the push: anonymous %.1f MiB, file-backed (spill file page cache) %.1f MiB\n", an/1024, fi/1024 }'

# 1 GiB volume copy across members: single call through the gateway vs the 3 calls directly
export INCUS_CONF="$out/incus"
rm -rf "$INCUS_CONF"
mkdir -p "$INCUS_CONF"
cp "$LXDGW_CLIENT_CERT" "$INCUS_CONF/client.crt"
cp "$LXDGW_CLIENT_KEY" "$INCUS_CONF/client.key"
nsx incus remote add gw https://127.0.0.1:8443 --accept-certificate >/dev/null 2>&1
nsx lxc storage volume create direct:pool1 bench-v --target node1 >/dev/null
head -c $((COPY_MIB << 20)) /dev/urandom >"$DIR/node1/storage-pools/pool1/custom/default_bench-v/data.bin"
sync
best_direct=1e9 best_gw=1e9
for round in 1 2; do
    t0=$(date +%s.%N)
    nsx lxc storage volume copy direct:pool1/bench-v direct:pool1/bench-v-direct --target node1 --destination-target node2 >/dev/null
    t1=$(date +%s.%N)
    nsx incus storage volume copy gw:pool1/bench-v gw:pool1/bench-v-gw --target node1 --destination-target node2 --debug \
        2>"$out/copy-debug.log" >/dev/null
    t2=$(date +%s.%N)
    posts=$(grep -c 'method=POST' "$out/copy-debug.log" || true)
    cmp -s "$DIR/node1/storage-pools/pool1/custom/default_bench-v/data.bin" \
        "$DIR/node2/storage-pools/pool1/custom/default_bench-v-gw/data.bin" || { echo "copy through the gateway differs" >&2; exit 1; }
    read -r best_direct best_gw < <(awk -v a="$t0" -v b="$t1" -v c="$t2" -v bd="$best_direct" -v bg="$best_gw" -v r="$round" -v p="$posts" 'BEGIN{
        printf "copy %d: direct 3-call %.2f s, gateway single call %.2f s (%d POST)\n", r, b-a, c-b, p > "/dev/stderr"
        printf "%f %f\n", (b-a < bd ? b-a : bd), (c-b < bg ? c-b : bg) }')
    for v in bench-v-direct bench-v-gw; do nsx lxc storage volume delete direct:pool1 "$v" --target node2 >/dev/null; done
done
awk -v d="$best_direct" -v g="$best_gw" -v m="$COPY_MIB" 'BEGIN{
    printf "\nvolume copy %d MiB node1 -> node2 (best of 2): direct 3-call %.2f s, gateway single call %.2f s, ratio gateway/direct %.3f\n",
        m, d, g, g/d }'

# 1 GiB volume move: single call through the gateway vs lxc 5.0.2's move directly (the volume goes back and forth)
gw_move() { # FROM TO: POST the move, then wait on the gateway's operation
    local id
    id=$(nsx curl -sk --cert "$LXDGW_CLIENT_CERT" --key "$LXDGW_CLIENT_KEY" -X POST \
        -d "{\"name\":\"bench-v\",\"migration\":true,\"source\":{\"location\":\"$1\"}}" \
        "https://127.0.0.1:8443/1.0/storage-pools/pool1/volumes/custom/bench-v?target=$2" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["id"])')
    nsx curl -sk --cert "$LXDGW_CLIENT_CERT" --key "$LXDGW_CLIENT_KEY" \
        "https://127.0.0.1:8443/1.0/operations/$id/wait?timeout=600" >"$out/move.json"
    python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["metadata"]; sys.exit(m["status"] != "Success")' "$out/move.json" ||
        { echo "gateway move $1 -> $2 failed: $(cat "$out/move.json")" >&2; exit 1; }
}
sum=$(sha256sum <"$DIR/node1/storage-pools/pool1/custom/default_bench-v/data.bin")
best_direct=1e9 best_gw=1e9
for round in 1 2; do
    t0=$(date +%s.%N)
    nsx lxc storage volume move direct:pool1/bench-v direct:pool1/bench-v --target node1 --destination-target node2 >/dev/null
    t1=$(date +%s.%N)
    gw_move node2 node1
    t2=$(date +%s.%N)
    [ "$(sha256sum <"$DIR/node1/storage-pools/pool1/custom/default_bench-v/data.bin")" = "$sum" ] ||
        { echo "the volume moved through the gateway differs" >&2; exit 1; }
    read -r best_direct best_gw < <(awk -v a="$t0" -v b="$t1" -v c="$t2" -v bd="$best_direct" -v bg="$best_gw" -v r="$round" 'BEGIN{
        printf "move %d: direct lxc 5.0.2 %.2f s, gateway single call %.2f s\n", r, b-a, c-b > "/dev/stderr"
        printf "%f %f\n", (b-a < bd ? b-a : bd), (c-b < bg ? c-b : bg) }')
done
awk -v d="$best_direct" -v g="$best_gw" -v m="$COPY_MIB" 'BEGIN{
    printf "volume move %d MiB between node1 and node2 (best of 2): direct lxc 5.0.2 %.2f s, gateway single call %.2f s, ratio gateway/direct %.3f\n",
        m, d, g, g/d }'
