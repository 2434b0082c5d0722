#!/usr/bin/env bash
# `make demo`: a real 3-member LXD 5.0.2 cluster in a private network namespace, the gateway in front of it, and
# real clients using it. `make demo-down` (or `scripts/demo.sh down`) removes it all.
set -euo pipefail
# shellcheck source=../scripts/common.sh
source "$(dirname "$0")/../scripts/common.sh"
GW=127.0.0.1:8443
bin=${LXDGW_DEMO_BINARY:-$top/build/lxd-gateway} # `make demo BUILD=dir` runs dir/lxd-gateway

if [ "${1:-}" = down ]; then
    [ -s "$DIR/demo-haproxy.pid" ] && kill "$(cat "$DIR/demo-haproxy.pid")" 2>/dev/null || true
    for g in demo-gw demo-gw-a demo-gw-b; do bash "$ctl" stop "$g" || true; done
    bash "$cluster" down
    exit 0
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; ip netns exec "$NS" env LXD_CONF="$LXD_CONF" "$@"; }

step "1. A real LXD 5.0.2 cluster (3 members) in network namespace $NS"
bash "$cluster" up
# shellcheck disable=SC1091
source "$DIR/env"

step "2. The gateway in front of it (state in $DIR/demo-gw)"
bash "$ctl" start demo-gw "$bin" "$GW"

step "3. lxc 5.0.2 with remote gw: pointing at the gateway"
export LXD_CONF="$DIR/demo-lxc"
mkdir -p "$LXD_CONF"
cp "$LXDGW_CLIENT_CERT" "$LXD_CONF/client.crt"
cp "$LXDGW_CLIENT_KEY" "$LXD_CONF/client.key"
ip netns exec "$NS" env LXD_CONF="$LXD_CONF" lxc remote add gw "https://$GW" --accept-certificate 2>/dev/null || true
show lxc cluster list gw:
show lxc storage list gw:

step "4. A custom volume on node1 with data in it"
for v in demo-copy demo-single; do
    ip netns exec "$NS" env LXD_CONF="$LXD_CONF" lxc storage volume delete gw:pool1 "$v" --target node2 2>/dev/null || true
done
for v in demo-moved demo-single; do
    ip netns exec "$NS" env LXD_CONF="$LXD_CONF" lxc storage volume delete gw:pool1 "$v" --target node3 2>/dev/null || true
done
ip netns exec "$NS" env LXD_CONF="$LXD_CONF" lxc storage volume delete gw:pool1 demo-vol --target node1 2>/dev/null || true
show lxc storage volume create gw:pool1 demo-vol --target node1
vol="$DIR/node1/storage-pools/pool1/custom/default_demo-vol"
head -c 4M /dev/urandom >"$vol/data.bin"
echo "written on node1" >"$vol/hello.txt"
echo "sha256 on node1: $(cat "$vol"/* | sha256sum | cut -c1-16)"

step "5. Copy it to node2 through the gateway (lxc 5.0.2: the 3-call path, the member pulling via the gateway)"
show lxc storage volume copy gw:pool1/demo-vol gw:pool1/demo-copy --target node1 --destination-target node2
echo "sha256 on node2: $(cat "$DIR/node2/storage-pools/pool1/custom/default_demo-copy"/* | sha256sum | cut -c1-16)"
show lxc storage volume list gw:pool1

step "6. incus 6.0.4 through the gateway (directly, it cannot even add this LXD 5.0.2 cluster as a remote)"
export INCUS_CONF="$DIR/demo-incus"
mkdir -p "$INCUS_CONF"
[ -s "$INCUS_CONF/client.crt" ] || incus remote generate-certificate >/dev/null
bash "$cluster" lxc node1 config trust add "$INCUS_CONF/client.crt" --name demo-incus 2>/dev/null || true
sleep 1.5 # the gateway learns of the new certificate from the cluster's lifecycle events
ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus remote add gw "https://$GW" --accept-certificate 2>/dev/null || true
printf '$ incus remote add direct https://127.0.0.11:8443\n'
ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus remote add direct https://127.0.0.11:8443 --accept-certificate 2>&1 | tail -1 || true
ishow() { printf '$ %s\n' "$*"; ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" "$@"; }
printf '$ incus info gw: | grep cluster_internal_custom_volume_copy   (added by the gateway; LXD 5.0.2 lacks it)\n'
ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus info gw: | grep cluster_internal_custom_volume_copy

step "7. The single call: incus copies node1 -> node2 with ONE POST (the gateway runs the 3 steps)"
printf '$ incus storage volume copy gw:pool1/demo-vol gw:pool1/demo-single --target node1 --destination-target node2 --debug\n'
ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus storage volume copy gw:pool1/demo-vol gw:pool1/demo-single \
    --target node1 --destination-target node2 --debug 2>&1 | grep -oE 'method=POST url="[^"]*"' || true
echo "sha256 on node2: $(cat "$DIR/node2/storage-pools/pool1/custom/default_demo-single"/* | sha256sum | cut -c1-16)"
grep 'msg="volume copy started"' "$DIR/demo-gw/gateway.log" | tail -1

step "8. incus moves the original node1 -> node3 (single-call copy, then the client deletes the source)"
ishow incus storage volume move gw:pool1/demo-vol gw:pool1/demo-moved --target node1 --destination-target node3
echo "sha256 on node3: $(cat "$DIR/node3/storage-pools/pool1/custom/default_demo-moved"/* | sha256sum | cut -c1-16)"

step "9. The single-call move as ONE gateway operation (raw API), waited on like any LXD operation"
printf '$ curl -X POST .../volumes/custom/demo-single?target=node3 -d {"name":"demo-single","migration":true,"source":{"location":"node2"}}\n'
op=$(ip netns exec "$NS" curl -sk --cert "$LXDGW_CLIENT_CERT" --key "$LXDGW_CLIENT_KEY" -X POST \
    -d '{"name":"demo-single","migration":true,"source":{"location":"node2"}}' \
    "https://$GW/1.0/storage-pools/pool1/volumes/custom/demo-single?target=node3")
echo "$op" | python3 -c 'import json,sys; m=json.load(sys.stdin)["metadata"]; print("operation", m["id"], m["description"], m["status"])'
id=$(echo "$op" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["id"])')
show lxc operation show "gw:$id"
ip netns exec "$NS" curl -sk --cert "$LXDGW_CLIENT_CERT" --key "$LXDGW_CLIENT_KEY" "https://$GW/1.0/operations/$id/wait?timeout=120" |
    python3 -c 'import json,sys; m=json.load(sys.stdin)["metadata"]; print("after wait:", m["status"], m["err"])'
echo "sha256 on node3: $(cat "$DIR/node3/storage-pools/pool1/custom/default_demo-single"/* | sha256sum | cut -c1-16)"
ishow incus storage volume list gw:pool1

if [ "${HA:-0}" = 1 ]; then
    HA_ADDR=127.0.0.1:8480
    declare -A RADDR=([demo-gw-a]=127.0.0.1:8481 [demo-gw-b]=127.0.0.1:8482) RMET=([demo-gw-a]=127.0.0.1:9481 [demo-gw-b]=127.0.0.1:9482)
    step "10. Two gateway replicas behind HAProxy (TLS passthrough, round-robin, no stickiness: see conf/haproxy.cfg)"
    peers=$(printf '  - {name: demo-gw-a, url: "https://%s"}\n  - {name: demo-gw-b, url: "https://%s"}' \
        "${RADDR[demo-gw-a]}" "${RADDR[demo-gw-b]}")
    for r in demo-gw-a demo-gw-b; do
        share=""
        [ "$r" = demo-gw-b ] && share="$DIR/demo-gw-a" # one server certificate: the one clients pin through HAProxy
        # a short flow lease (default 20 s): step 14 waits for it to pass
        LXDGW_SHARE_CERT="$share" LXDGW_CLUSTER_CONF="flow_lease: 6s" LXDGW_EXTRA_CONF="$(printf 'public_addresses: ["%s"]\nmetrics: {listen: "%s"}\npeers:\n%s' \
            "$HA_ADDR" "${RMET[$r]}" "$peers")" bash "$ctl" start "$r" "$bin" "${RADDR[$r]}"
    done
    sleep 2.5 # each replica probes the other and follows its operation feed
    grep -h 'msg="gateway replica up"' "$DIR/demo-gw-a/gateway.log" "$DIR/demo-gw-b/gateway.log"
    sed -e "s|^    bind .*|    bind $HA_ADDR|" -e '/^    server gw2 /d' \
        -e "s|^    server gw1 .*|    server demo-gw-a ${RADDR[demo-gw-a]} check inter 500ms fall 2 rise 2\n    server demo-gw-b ${RADDR[demo-gw-b]} check inter 500ms fall 2 rise 2|" \
        "$top/conf/haproxy.cfg" >"$DIR/demo-haproxy.cfg"
    [ -s "$DIR/demo-haproxy.pid" ] && kill "$(cat "$DIR/demo-haproxy.pid")" 2>/dev/null || true
    ip netns exec "$NS" haproxy -f "$DIR/demo-haproxy.cfg" -D -p "$DIR/demo-haproxy.pid"
    echo "HAProxy on https://$HA_ADDR -> demo-gw-a ${RADDR[demo-gw-a]}, demo-gw-b ${RADDR[demo-gw-b]}"
    for r in ha demo-gw-a demo-gw-b; do
        addr=$HA_ADDR
        [ "$r" != ha ] && addr=${RADDR[$r]}
        ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus remote add "$r" "https://$addr" --accept-certificate 2>/dev/null || true
    done

    step "11. A single-call move POSTed through HAProxy, waited on at the replica that does NOT run it"
    for n in node1 node3; do
        ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus storage volume delete ha:pool1 demo-ha --target $n 2>/dev/null || true
    done
    ishow incus storage volume create ha:pool1 demo-ha --target node1
    head -c 64M /dev/urandom >"$DIR/node1/storage-pools/pool1/custom/default_demo-ha/data.bin"
    echo "sha256 on node1: $(sha256sum <"$DIR/node1/storage-pools/pool1/custom/default_demo-ha/data.bin" | cut -c1-16)"
    printf '$ incus query --raw -X POST ha:/1.0/storage-pools/pool1/volumes/custom/demo-ha?target=node3 -d {...}\n'
    id=$(ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus query --raw -X POST \
        -d '{"name":"demo-ha","migration":true,"source":{"location":"node1"}}' \
        "ha:/1.0/storage-pools/pool1/volumes/custom/demo-ha?target=node3" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["id"])')
    owner=demo-gw-b other=demo-gw-a
    [ "${id:0:8}" = "$(cat "$DIR/demo-gw-a/replica-id")" ] && owner=demo-gw-a other=demo-gw-b
    echo "operation $id runs on $owner (its id starts with $owner's tag)"
    ishow incus query "$other:/1.0/operations/$id/wait?timeout=120" | grep -E '"(status|err|description)"'
    echo "sha256 on node3: $(sha256sum <"$DIR/node3/storage-pools/pool1/custom/default_demo-ha/data.bin" | cut -c1-16)"

    step "12. One replica killed: requests through HAProxy keep working on the other; restarted, it rejoins"
    kill -9 "$(cat "$DIR/demo-gw-a/gateway.pid")"
    echo "demo-gw-a killed (SIGKILL)"
    ishow incus storage volume list ha:pool1 --format csv --columns nL
    ishow incus storage volume copy ha:pool1/demo-ha ha:pool1/demo-ha-copy --target node3 --destination-target node2
    bash "$ctl" restart demo-gw-a "$bin" "${RADDR[demo-gw-a]}"
    sleep 2.5 # demo-gw-b sees it answer again (health interval 2 s)
    grep -h 'msg="gateway replica' "$DIR/demo-gw-b/gateway.log" | tail -2
    ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus storage volume delete ha:pool1 demo-ha-copy --target node2

    step "13. Each replica's counters (curl of /metrics)"
    for r in demo-gw-a demo-gw-b; do
        echo "# $r"
        ip netns exec "$NS" curl -s "http://${RMET[$r]}/metrics" | grep -E '^lxd_gateway_(single_calls_total|operations_finished_total|peer_up)'
    done

    step "14. A replica lost for good mid-move: the other adopts the move from the cluster's database and finishes it"
    # demo-gw-a runs with the test hook that freezes it right after it recorded the transfer complete (target made,
    # source not deleted yet): the kill lands there every time. The POST goes to demo-gw-a itself, so the demo knows
    # which replica to kill (through HAProxy it lands on either).
    bash "$ctl" stop demo-gw-a
    echo "demo-gw-a restarted with LXDGW_TEST_PAUSE_AT=transferred (a test hook: it freezes once the transfer is recorded)"
    LXDGW_TEST_PAUSE_AT=transferred bash "$ctl" restart demo-gw-a "$bin" "${RADDR[demo-gw-a]}"
    sleep 2.5 # the replicas find each other again
    for n in node1 node2; do
        ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus storage volume delete ha:pool1 demo-adopt --target $n 2>/dev/null || true
    done
    ishow incus storage volume create ha:pool1 demo-adopt --target node1
    head -c 256M /dev/urandom >"$DIR/node1/storage-pools/pool1/custom/default_demo-adopt/data.bin"
    echo "sha256 on node1: $(sha256sum <"$DIR/node1/storage-pools/pool1/custom/default_demo-adopt/data.bin" | cut -c1-16)"
    printf '$ incus query --raw -X POST demo-gw-a:/1.0/storage-pools/pool1/volumes/custom/demo-adopt?target=node2 -d {...}\n'
    id=$(ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus query --raw -X POST \
        -d '{"name":"demo-adopt","migration":true,"source":{"location":"node1"}}' \
        "demo-gw-a:/1.0/storage-pools/pool1/volumes/custom/demo-adopt?target=node2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["id"])')
    echo "operation $id runs on demo-gw-a"
    for _ in $(seq 600); do # bounded: 2 min
        grep -q 'msg="paused for a test" step=transferred' "$DIR/demo-gw-a/gateway.log" && break
        sleep 0.2
    done
    echo "the move's state, in the cluster's own database (project lxd-gateway, one profile per flow and owner):"
    bash "$cluster" lxc node1 profile list --project lxd-gateway --format csv | grep "^flow-$id" || echo "  (none: see $DIR/demo-gw-a/gateway.log)"
    kill -9 "$(cat "$DIR/demo-gw-a/gateway.pid")"
    killed=$(date +%s)
    rm -f "$DIR/demo-gw-a/gateway.pid"
    echo "demo-gw-a killed for good (SIGKILL) after the transfer, before the source was deleted; it is not started again"
    echo "waiting for demo-gw-b to see demo-gw-a's lease (6 s) pass..."
    for _ in $(seq 300); do # bounded: 60 s
        grep -q "msg=\"volume move ended\" move=$id" "$DIR/demo-gw-b/gateway.log" && break
        sleep 0.2
    done
    grep -hE "msg=\"(flow adopted|found an interrupted move|recovering a move[^\"]*|volume move ended)\" (flow|move)=$id" \
        "$DIR/demo-gw-b/gateway.log" || echo "(demo-gw-b logged no adoption: see $DIR/demo-gw-b/gateway.log)"
    echo "$(($(date +%s) - killed)) s after the kill"
    printf '$ incus query ha:/1.0/operations/%s/wait?timeout=60   (through HAProxy: only demo-gw-b is left)\n' "$id"
    ip netns exec "$NS" env INCUS_CONF="$INCUS_CONF" incus query "ha:/1.0/operations/$id/wait?timeout=60" | grep -E '"(status|err)"' || true
    ishow incus storage volume list ha:pool1 --format csv --columns nL
    [ -f "$DIR/node2/storage-pools/pool1/custom/default_demo-adopt/data.bin" ] &&
        echo "sha256 on node2: $(sha256sum <"$DIR/node2/storage-pools/pool1/custom/default_demo-adopt/data.bin" | cut -c1-16)"
    echo "flow records left in the cluster: $(bash "$cluster" lxc node1 profile list --project lxd-gateway --format csv | grep -c '^flow-' || true)"
fi

cat <<TXT

The demo stays up. Try it yourself:
  ip netns exec $NS env LXD_CONF=$LXD_CONF lxc list gw:
  ip netns exec $NS env LXD_CONF=$LXD_CONF lxc monitor gw:
Gateway log: $DIR/demo-gw/gateway.log        Tear down: make demo-down
TXT
if [ "${HA:-0}" = 1 ]; then
    echo "Replicas: demo-gw-b on https://127.0.0.1:8482 behind HAProxy https://127.0.0.1:8480 (demo-gw-a was killed in step 14)"
fi
