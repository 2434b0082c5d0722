#!/usr/bin/env bash
# `make bench`: the gateway against direct access to a member and against HAProxy, measured in the same run on the
# real test cluster (issue 14). Everything runs inside the cluster's network namespace (loopback only); every step is
# bounded by a timeout. Prints one markdown table at the end (bench/table.py); the raw numbers are in
# build/bench/results.txt (one "key value" a line) and build/bench/raw.txt (the tools' own output lines).
#
#   API:   GET /1.0, /1.0/instances?recursion=1 and /1.0/storage-pools?recursion=1 at fixed concurrency for a fixed
#          time over keep-alive connections, with the trusted client certificate: req/s, p50/p99 latency, proxy CPU
#          seconds per 10k requests (utime+stime of the proxy process: independent of how busy the machine is).
#          HAProxy terminates TLS and re-encrypts to node1 with the same client certificate (one thread, as the
#          gateway has one event loop). Scale: the first two at 1, 16 and 128 connections.
#   lxc:   a fresh `lxc` process per command (a full TLS handshake each): `lxc list` and `lxc storage volume list
#          pool1`, 50 times each, interleaved direct / HAProxy / gateway: total wall time of each.
#   Push:  `lxc file push` of 1 GiB, directly and through the gateway; and `lxc image import` of a 1 GiB unified
#          image tarball. Two rounds, alternating, each after `sync`; wall time ratio of the best of each. Through
#          the gateway, sampled every 50 ms (bench/sample.py): its peak RssAnon and the most
#          body bytes it held at once (its spill files, unlinked ones included, plus its anonymous memory's growth).
#   Copy:  a 1 GiB custom volume from node1 to node2: the single call through the gateway (`incus`, which uses the
#          extension the gateway adds) against the 3-call path run directly against the members (`lxc` 5.0.2);
#          two rounds, alternating; wall time ratio of the best of each.
#   Move:  the same volume moved between node1 and node2: the single call through the gateway (raw API POST + wait
#          on the gateway's operation) against `lxc` 5.0.2's move run directly (3-call copy + DELETE); two rounds.
#   Idle:  1000 idle /1.0/events websockets held open through the gateway: its RSS and open fds before, with them,
#          and 2 s after they closed (last, so that what they leave behind does not count in the upload rows).
#
# Knobs (defaults: the full run): BENCH_CONCURRENCY (16), BENCH_SECONDS (10 per load run), BENCH_SCALE ("1 16 128"),
# BENCH_LXC_RUNS (50), BENCH_PUSH_MIB (1024), BENCH_IMAGE_MIB (1024), BENCH_COPY_MIB (1024), BENCH_IDLE_STREAMS
# (1000), BENCH_ROUNDS (2: push and image), BENCH_PARTS (all of "api lxc push image copy idle"; a subset for a quick
# look), LXDGW_KEEP_CLUSTER=1.
# The cluster is the one tests/cluster/cluster.sh runs for LXDGW_NETNS / LXDGW_CLUSTER_DIR (scripts/common.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../scripts/common.sh
source "$(dirname "$0")/../scripts/common.sh"
CONC=${BENCH_CONCURRENCY:-16}
SECS=${BENCH_SECONDS:-10}
SCALE=${BENCH_SCALE:-1 16 128}
LXC_RUNS=${BENCH_LXC_RUNS:-50}
PUSH_MIB=${BENCH_PUSH_MIB:-1024}
IMAGE_MIB=${BENCH_IMAGE_MIB:-1024}
COPY_MIB=${BENCH_COPY_MIB:-1024}
IDLE=${BENCH_IDLE_STREAMS:-1000}
ROUNDS=${BENCH_ROUNDS:-2} # rounds of the push and image rows, alternating direct and gateway (the best of each)
PARTS=${BENCH_PARTS:-api lxc push image copy idle}
out="$top/build/bench"
mkdir -p "$out"
# `lxc launch` reads an instance configuration from a stdin that is not a terminal; /dev/null once turned out to
# be a regular file (replaced by some other program on a shared machine), and lxc read junk from it
[ -c /dev/null ] || { echo "bench: error: /dev/null is not a character device (mknod -m 666 /dev/null c 1 3)" >&2; exit 1; }
exec </dev/null

die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
part() { [[ " $PARTS " == *" $1 "* ]]; }
res() { echo "$1 $2" >>"$out/results.txt"; } # a raw number for the table
now() { date +%s.%N; }
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; } # user+system of PID
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }

cc -O2 -Wall -Wextra -Werror -o "$out/loadgen" "$top/bench/loadgen.c" -lcurl
timeout 900 bash "$cluster" up
# shellcheck disable=SC1091
source "$DIR/env"
nsx() { ip netns exec "$NS" "$@"; }
# 128 keep-alive connections, 1000 websockets (each a client and a member connection in the gateway): room for fds
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

rm -f "$out/haproxy.pid" # an earlier run's: its pid may be another process by now

idle_pid="" fp=""
cleanup() {
    set +e
    [ -z "$idle_pid" ] || kill "$idle_pid" 2>/dev/null
    [ -s "$out/haproxy.pid" ] && kill "$(head -1 "$out/haproxy.pid")" 2>/dev/null
    bash "$ctl" stop bench-gw
    if [ -d "$out/lxc" ]; then
        nsx timeout 60 env LXD_CONF="$out/lxc" lxc delete -f direct:bench-c1 >/dev/null 2>&1
        [ -z "$fp" ] || nsx timeout 60 env LXD_CONF="$out/lxc" lxc image delete "direct:$fp" >/dev/null 2>&1
    fi
    for v in bench-v bench-v-direct bench-v-gw; do
        for n in node1 node2; do
            timeout 60 bash "$cluster" lxc "$n" storage volume delete pool1 "$v" --target "$n" >/dev/null 2>&1
        done
    done
    rm -f "$out/push.bin" "$out/image.tar" "$out"/*.stop
    rm -rf "$out/image"
    [ "${LXDGW_KEEP_CLUSTER:-0}" = 1 ] || timeout 300 bash "$cluster" down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

timeout 120 bash "$ctl" start bench-gw "$top/build/lxd-gateway" 127.0.0.1:8443
gw_pid=$(cat "$DIR/bench-gw/gateway.pid")
gw_pid=$(pgrep -P "$gw_pid" lxd-gateway || echo "$gw_pid") # `ip netns exec` may stay as the parent
gw_state="$DIR/bench-gw"

# HAProxy: TLS in (the gateway's own server certificate), TLS out with the test client's certificate.
cat "$gw_state/server.crt" "$gw_state/server.key" >"$out/haproxy-server.pem"
cat "$LXDGW_CLIENT_CERT" "$LXDGW_CLIENT_KEY" >"$out/haproxy-client.pem"
cat >"$out/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    maxconn 4096
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
for _ in $(seq 50); do [ -s "$out/haproxy.pid" ] && break; sleep 0.1; done
hap_pid=$(head -1 "$out/haproxy.pid")
[ -d "/proc/$hap_pid" ] || die "haproxy did not start"

: >"$out/results.txt"
: >"$out/raw.txt"
res conc "$CONC"
res scale "$SCALE"
res parts "$PARTS"

# lxc's configuration: the bench's client certificate, remotes direct: (node1), ha: (HAProxy), gw: (the gateway)
export LXD_CONF="$out/lxc"
rm -rf "$LXD_CONF" # remotes pinned to an earlier cluster's certificate would be refused
mkdir -p "$LXD_CONF"
cp "$LXDGW_CLIENT_CERT" "$LXD_CONF/client.crt"
cp "$LXDGW_CLIENT_KEY" "$LXD_CONF/client.key"
for r in direct=https://127.0.0.11:8443 ha=https://127.0.0.1:9443 gw=https://127.0.0.1:8443; do
    nsx timeout 60 lxc remote add "${r%%=*}" "${r#*=}" --accept-certificate >/dev/null || die "lxc remote add $r"
done

# ---- API: load at fixed concurrency -----------------------------------------------------------------------------
# load KEY URL PID CONC: one load run (bench/loadgen.c): a warm-up that opens the connections (1 s, 3 s past 16
# connections), then SECS measured; writes KEY.{rps,p50,p99,cpu} (cpu: the proxy's CPU seconds per 10k requests in
# the window, read by loadgen from /proc/PID/stat; none for direct). Any failed request fails the bench.
load() {
    local key=$1 url=$2 pid=$3 c=$4 warm=1 line
    [ "$c" -le 16 ] || warm=3
    line=$(nsx timeout $((SECS + warm + 120)) "$out/loadgen" "$url" "$LXDGW_CLIENT_CERT" "$LXDGW_CLIENT_KEY" "$c" \
        "$SECS" "$warm" ${pid:+"$pid"}) || die "$key ($url): $line"
    echo "$key: $line" >>"$out/raw.txt"
    awk -v l="$line" -v k="$key" 'BEGIN{
        n=split(l,f," "); for(i=1;i<=n;i++){split(f[i],kv,"="); v[kv[1]]=kv[2]}
        printf "%s.rps %s\n%s.p50 %s\n%s.p99 %s\n", k, v["rps"], k, v["p50_ms"], k, v["p99_ms"]
        if ("cpu_s" in v) printf "%s.cpu %.3f\n", k, v["cpu_s"] / v["requests"] * 10000
    }' >>"$out/results.txt"
    printf '%-28s %s\n' "$key" "$line"
}

if part api; then
    echo "== API: $SECS s per run; concurrency $CONC, scale ${SCALE// /, }"
    for lp in "root /1.0" "instances /1.0/instances?recursion=1" "pools /1.0/storage-pools?recursion=1"; do
        label=${lp%% *} path=${lp#* }
        concs=$CONC
        if [ "$label" != pools ]; then
            for c in $SCALE; do [ "$c" = "$CONC" ] || concs="$concs $c"; done
        fi
        for c in $concs; do
            for t in direct haproxy gateway; do
                case $t in
                direct) url="https://127.0.0.11:8443$path" pid="" ;;
                haproxy) url="https://127.0.0.1:9443$path" pid=$hap_pid ;;
                gateway) url="https://127.0.0.1:8443$path" pid=$gw_pid ;;
                esac
                load "api.$label.$t.c$c" "$url" "$pid" "$c"
            done
        done
    done
fi

# ---- A fresh lxc process per command ----------------------------------------------------------------------------
if part lxc; then
    echo "== lxc: $LXC_RUNS fresh processes per command and remote"
    res lxc_runs "$LXC_RUNS"
    declare -A NS_SUM=()
    g0=$(cpu_s "$gw_pid") h0=$(cpu_s "$hap_pid")
    for _ in $(seq "$LXC_RUNS"); do
        for r in direct ha gw; do
            for cmd in list vollist; do
                case $cmd in
                list) args=(list "$r:") ;;
                vollist) args=(storage volume list "$r:pool1") ;;
                esac
                t0=$(date +%s%N)
                nsx timeout 60 lxc "${args[@]}" >/dev/null || die "lxc ${args[*]} failed"
                t1=$(date +%s%N)
                NS_SUM[$cmd.$r]=$((${NS_SUM[$cmd.$r]:-0} + t1 - t0))
            done
        done
    done
    res lxc.gateway.cpu "$(awk -v a="$g0" -v b="$(cpu_s "$gw_pid")" 'BEGIN{printf "%.2f", b-a}')"
    res lxc.haproxy.cpu "$(awk -v a="$h0" -v b="$(cpu_s "$hap_pid")" 'BEGIN{printf "%.2f", b-a}')"
    for k in "${!NS_SUM[@]}"; do
        t=${k#*.}
        case $t in ha) t=haproxy ;; gw) t=gateway ;; esac
        res "lxc.${k%%.*}.$t.seconds" "$(awk -v n="${NS_SUM[$k]}" 'BEGIN{printf "%.3f", n/1e9}')"
    done
    grep '^lxc\.' "$out/results.txt"
fi

# sampled SECTION CMD...: runs CMD (timed, its output dropped) while bench/sample.py watches the gateway; writes
# SECTION.gateway.*. A CMD that fails is recorded (SECTION.gateway.failed, its error in raw.txt), the bench goes on
# with the other parts and fails at the end, after the table.
failed=""
sampled() {
    local sec=$1 t0 t1 line ok=1
    shift
    rm -f "$out/$sec.stop"
    python3 "$top/bench/sample.py" "$gw_pid" "$out/$sec.stop" 1800 "$gw_state" /tmp /var/tmp >"$out/$sec.sample" &
    local sp=$!
    t0=$(now)
    "$@" >/dev/null 2>"$out/$sec.err" || ok=0
    t1=$(now)
    touch "$out/$sec.stop"
    wait "$sp" || die "sampling the gateway during $sec failed"
    line=$(cat "$out/$sec.sample")
    echo "$sec.gateway: $line" >>"$out/raw.txt"
    res "$sec.gateway.seconds" "$(elapsed "$t0" "$t1")"
    for kv in $line; do res "$sec.gateway.${kv%%=*}" "${kv#*=}"; done
    if [ $ok = 0 ]; then
        res "$sec.gateway.failed" 1
        echo "$sec.gateway.error: $(tr '\n' ' ' <"$out/$sec.err")" >>"$out/raw.txt"
        echo "bench: error: $sec through the gateway FAILED after $(elapsed "$t0" "$t1") s: $(cat "$out/$sec.err")" >&2
        failed="$failed $sec"
        return 1
    fi
    sampled_s=$(elapsed "$t0" "$t1")
    echo "$sec through the gateway: $sampled_s s; $line (KiB)"
}
min() { awk -v a="$1" -v b="$2" 'BEGIN{print (a == "" || b + 0 < a + 0) ? b : a}'; }
# after rounds of sampled SEC: the best wall time of each side, the worst memory of the gateway's rounds (sampled
# wrote each round's numbers; table.py takes a key's last line)
best_of_rounds() {
    local sec=$1 direct=$2 gw=$3
    awk -v p="$sec.gateway." 'index($1, p) == 1 && $1 != p "seconds" { if (!($1 in m) || $2 + 0 > m[$1]) m[$1] = $2 }
        END { for (k in m) print k, m[k] }' "$out/results.txt" >"$out/$sec.worst"
    cat "$out/$sec.worst" >>"$out/results.txt"
    res "$sec.direct.seconds" "$direct"
    [ -z "$gw" ] || res "$sec.gateway.seconds" "$gw"
    echo "$sec: best of $ROUNDS rounds: direct $direct s, through the gateway ${gw:-FAILED} s"
}

# ---- 1 GiB file push, directly and through the gateway, into one container --------------------------------------
if part push; then
    echo "== file push: $PUSH_MIB MiB"
    res push_mib "$PUSH_MIB"
    nsx timeout 300 lxc launch direct:busybox direct:bench-c1 --target node1 >"$out/launch.log" 2>&1 ||
        die "launch: $(cat "$out/launch.log")"
    head -c $((PUSH_MIB << 20)) /dev/urandom >"$out/push.bin"
    best_direct="" best_gw=""
    for round in $(seq "$ROUNDS"); do
        # each push starts with nothing of the other's left to write back (the first run of this bench timed the
        # gateway's push while the direct push's GiB was being written to disk: 1.51x; with sync, 1.05x)
        nsx timeout 120 lxc file delete direct:bench-c1/root/push.bin >/dev/null 2>&1 || true
        sync
        t0=$(now)
        nsx timeout 900 lxc file push -q "$out/push.bin" direct:bench-c1/root/push.bin || die "direct push failed"
        t1=$(now)
        best_direct=$(min "$best_direct" "$(elapsed "$t0" "$t1")")
        echo "push direct: $(elapsed "$t0" "$t1") s"
        nsx timeout 120 lxc file delete direct:bench-c1/root/push.bin >/dev/null || die "delete the pushed file"
        sync
        if sampled push nsx timeout 900 lxc file push -q "$out/push.bin" gw:bench-c1/root/push.bin; then
            best_gw=$(min "$best_gw" "$sampled_s")
        fi
    done
    best_of_rounds push "$best_direct" "$best_gw"
    rm -f "$out/push.bin"
    nsx timeout 120 lxc delete -f direct:bench-c1 >/dev/null || die "delete bench-c1"
fi

# ---- 1 GiB image import, directly and through the gateway -------------------------------------------------------
if part image; then
    echo "== image import: $IMAGE_MIB MiB unified tarball"
    res image_mib "$IMAGE_MIB"
    # a unified image tarball: metadata.yaml and rootfs/ (one file of random data), uncompressed
    rm -rf "$out/image"
    mkdir -p "$out/image/rootfs"
    printf 'architecture: %s\ncreation_date: %s\nproperties:\n  description: lxd-gateway bench\n  os: bench\n' \
        "$(uname -m)" "$(date +%s)" >"$out/image/metadata.yaml"
    # the tarball is IMAGE_MIB MiB at most, not a few KiB over: tar's headers and 10 KiB records are left out of the data
    head -c $(((IMAGE_MIB << 20) - 20480)) /dev/urandom >"$out/image/rootfs/data.bin"
    tar -C "$out/image" -cf "$out/image.tar" metadata.yaml rootfs
    rm -rf "$out/image"
    [ "$(stat -c %s "$out/image.tar")" -le $((IMAGE_MIB << 20)) ] || die "the image tarball is over $IMAGE_MIB MiB"
    fp=$(sha256sum "$out/image.tar" | cut -c1-64)
    best_direct="" best_gw=""
    for round in $(seq "$ROUNDS"); do
        sync
        t0=$(now)
        nsx timeout 900 lxc image import "$out/image.tar" direct: >/dev/null || die "direct image import failed"
        t1=$(now)
        best_direct=$(min "$best_direct" "$(elapsed "$t0" "$t1")")
        echo "image import direct: $(elapsed "$t0" "$t1") s"
        nsx timeout 120 lxc image delete "direct:$fp" || die "image delete"
        sync
        if sampled image nsx timeout 900 lxc image import "$out/image.tar" gw:; then
            best_gw=$(min "$best_gw" "$sampled_s")
            nsx timeout 120 lxc image info "direct:$fp" >/dev/null || die "the image imported through the gateway is not there"
            nsx timeout 120 lxc image delete "direct:$fp" || die "image delete"
        fi
    done
    best_of_rounds image "$best_direct" "$best_gw"
    fp=""
    rm -f "$out/image.tar"
fi

# ---- 1 GiB volume copy across members: single call through the gateway vs the 3 calls directly ------------------
if part copy; then
    echo "== volume copy and move: $COPY_MIB MiB"
    res copy_mib "$COPY_MIB"
    export INCUS_CONF="$out/incus"
    rm -rf "$INCUS_CONF"
    mkdir -p "$INCUS_CONF"
    cp "$LXDGW_CLIENT_CERT" "$INCUS_CONF/client.crt"
    cp "$LXDGW_CLIENT_KEY" "$INCUS_CONF/client.key"
    nsx timeout 60 incus remote add gw https://127.0.0.1:8443 --accept-certificate >/dev/null 2>&1 || die "incus remote add"
    nsx timeout 120 lxc storage volume create direct:pool1 bench-v --target node1 >/dev/null
    head -c $((COPY_MIB << 20)) /dev/urandom >"$DIR/node1/storage-pools/pool1/custom/default_bench-v/data.bin"
    sync
    best_direct=1e9 best_gw=1e9 gw_cpu=0
    best() { awk -v a="$1" -v b="$2" 'BEGIN{print (a < b ? a : b)}'; }
    for round in 1 2; do
        t0=$(now)
        nsx timeout 900 lxc storage volume copy direct:pool1/bench-v direct:pool1/bench-v-direct --target node1 \
            --destination-target node2 >/dev/null || die "direct copy failed"
        t1=$(now) c0=$(cpu_s "$gw_pid")
        nsx timeout 900 incus storage volume copy gw:pool1/bench-v gw:pool1/bench-v-gw --target node1 \
            --destination-target node2 --debug 2>"$out/copy-debug.log" >/dev/null || die "copy through the gateway failed"
        t2=$(now)
        gw_cpu=$(awk -v s="$gw_cpu" -v a="$c0" -v b="$(cpu_s "$gw_pid")" 'BEGIN{printf "%.2f", s + b - a}')
        posts=$(grep -c 'method=POST' "$out/copy-debug.log" || true)
        cmp -s "$DIR/node1/storage-pools/pool1/custom/default_bench-v/data.bin" \
            "$DIR/node2/storage-pools/pool1/custom/default_bench-v-gw/data.bin" || die "copy through the gateway differs"
        echo "copy $round: direct 3-call $(elapsed "$t0" "$t1") s, gateway single call $(elapsed "$t1" "$t2") s ($posts POST)"
        best_direct=$(best "$best_direct" "$(elapsed "$t0" "$t1")")
        best_gw=$(best "$best_gw" "$(elapsed "$t1" "$t2")")
        for v in bench-v-direct bench-v-gw; do
            nsx timeout 120 lxc storage volume delete direct:pool1 "$v" --target node2 >/dev/null || die "delete $v"
        done
    done
    res copy.direct.seconds "$best_direct"
    res copy.gateway.seconds "$best_gw"
    res copy.gateway.cpu "$(awk -v s="$gw_cpu" 'BEGIN{printf "%.2f", s / 2}')"

    # the volume moved back and forth: single call through the gateway vs lxc 5.0.2's move directly
    gw_move() { # FROM TO: POST the move, then wait on the gateway's operation
        local id
        id=$(nsx timeout 60 curl -sk --cert "$LXDGW_CLIENT_CERT" --key "$LXDGW_CLIENT_KEY" -X POST \
            -d "{\"name\":\"bench-v\",\"migration\":true,\"source\":{\"location\":\"$1\"}}" \
            "https://127.0.0.1:8443/1.0/storage-pools/pool1/volumes/custom/bench-v?target=$2" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["id"])') || die "gateway move: no operation"
        nsx timeout 900 curl -sk --cert "$LXDGW_CLIENT_CERT" --key "$LXDGW_CLIENT_KEY" \
            "https://127.0.0.1:8443/1.0/operations/$id/wait?timeout=850" >"$out/move.json" || die "gateway move: wait failed"
        python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["metadata"]; sys.exit(m["status"] != "Success")' "$out/move.json" ||
            die "gateway move $1 -> $2 failed: $(cat "$out/move.json")"
    }
    sum=$(sha256sum <"$DIR/node1/storage-pools/pool1/custom/default_bench-v/data.bin")
    best_direct=1e9 best_gw=1e9 gw_cpu=0
    for round in 1 2; do
        t0=$(now)
        nsx timeout 900 lxc storage volume move direct:pool1/bench-v direct:pool1/bench-v --target node1 \
            --destination-target node2 >/dev/null || die "direct move failed"
        t1=$(now) c0=$(cpu_s "$gw_pid")
        gw_move node2 node1
        t2=$(now)
        gw_cpu=$(awk -v s="$gw_cpu" -v a="$c0" -v b="$(cpu_s "$gw_pid")" 'BEGIN{printf "%.2f", s + b - a}')
        [ "$(sha256sum <"$DIR/node1/storage-pools/pool1/custom/default_bench-v/data.bin")" = "$sum" ] ||
            die "the volume moved through the gateway differs"
        echo "move $round: direct lxc 5.0.2 $(elapsed "$t0" "$t1") s, gateway single call $(elapsed "$t1" "$t2") s"
        best_direct=$(best "$best_direct" "$(elapsed "$t0" "$t1")")
        best_gw=$(best "$best_gw" "$(elapsed "$t1" "$t2")")
    done
    res move.direct.seconds "$best_direct"
    res move.gateway.seconds "$best_gw"
    res move.gateway.cpu "$(awk -v s="$gw_cpu" 'BEGIN{printf "%.2f", s / 2}')"
    nsx timeout 120 lxc storage volume delete direct:pool1 bench-v --target node1 >/dev/null || die "delete bench-v"
fi

# ---- Idle event streams through the gateway (last: what they leave behind would blur the upload rows) ----------
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
if part idle; then
    echo "== $IDLE idle /1.0/events streams through the gateway"
    res idle_n "$IDLE"
    sleep 1
    res idle.gateway.rss_before "$(status_kib "$gw_pid" VmRSS)"
    res idle.gateway.fds_before "$(find "/proc/$gw_pid/fd" -mindepth 1 | wc -l)"
    res idle.gateway.anon_before "$(status_kib "$gw_pid" RssAnon)"
    rm -f "$out/idle.stop"
    nsx python3 "$top/bench/idle_streams.py" 127.0.0.1:8443 "$LXDGW_CLIENT_CERT" "$LXDGW_CLIENT_KEY" "$IDLE" \
        "$out/idle.stop" 600 >"$out/idle.out" 2>"$out/idle.err" &
    idle_pid=$!
    for _ in $(seq 3000); do # 300 s
        grep -q '^opened=' "$out/idle.out" && break
        kill -0 "$idle_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "^opened=$IDLE " "$out/idle.out" || die "idle streams: $(cat "$out/idle.out" "$out/idle.err")"
    sleep 2 # let the gateway settle with them open
    res idle.gateway.rss_with "$(status_kib "$gw_pid" VmRSS)"
    res idle.gateway.fds_with "$(find "/proc/$gw_pid/fd" -mindepth 1 | wc -l)"
    res idle.gateway.anon_with "$(status_kib "$gw_pid" RssAnon)"
    touch "$out/idle.stop"
    wait "$idle_pid" || die "idle streams did not all stay open: $(cat "$out/idle.out" "$out/idle.err")"
    idle_pid=""
    tee -a "$out/raw.txt" <"$out/idle.out"
    sleep 2 # what stays after they closed
    res idle.gateway.rss_after "$(status_kib "$gw_pid" VmRSS)"
    res idle.gateway.fds_after "$(find "/proc/$gw_pid/fd" -mindepth 1 | wc -l)"
fi

echo
echo "## lxd-gateway bench ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo
table_rc=0
python3 "$top/bench/table.py" "$out/results.txt" || table_rc=$?
echo
echo "raw numbers: $out/results.txt, $out/raw.txt"
[ -z "$failed" ] || die "through the gateway, these FAILED (their rows say so; errors in $out/raw.txt):$failed"
[ "$table_rc" = 0 ] || die "a measurement is missing (table.py names it above); raw numbers: $out/results.txt"
