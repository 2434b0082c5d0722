#!/usr/bin/env bash
# `make demo`: a real 3-member LXD 5.0.2 cluster in a private network namespace, the gateway in front of it, and
# real clients using it. `make demo-down` (or `scripts/demo.sh down`) removes it all.
set -euo pipefail
# shellcheck source=../scripts/common.sh
source "$(dirname "$0")/../scripts/common.sh"
GW=127.0.0.1:8443

if [ "${1:-}" = down ]; then
    bash "$ctl" stop demo-gw || true
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
bash "$ctl" start demo-gw "$top/build/lxd-gateway" "$GW"

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

cat <<TXT

The demo stays up. Try it yourself:
  ip netns exec $NS env LXD_CONF=$LXD_CONF lxc list gw:
  ip netns exec $NS env LXD_CONF=$LXD_CONF lxc monitor gw:
Gateway log: $DIR/demo-gw/gateway.log        Tear down: make demo-down
TXT
