"""Single-call copy issue: one POST copies a custom volume from one member to another, through the gateway, on the
real LXD 5.0.2 cluster (which lacks cluster_internal_custom_volume_copy). Data is compared on disk: on a `dir` pool a
volume is a directory (a block volume a root.img file) under the member's storage pool."""
import json
import os
import time

import pytest

from conftest import member_lxc
from helpers import CLUSTER_DIR, MiB, curl, random_file, sh, tree_digest, volume_dir

EXT = "cluster_internal_custom_volume_copy"


def snapshot_dir(node, vol, snap, project="default"):
    return f"{CLUSTER_DIR}/{node}/storage-pools/pool1/custom-snapshots/{project}_{vol}/{snap}"


def fill(node, vol, project="default", size=4 * MiB):
    """Files of random data in a volume, written on the member's disk; returns the tree's digest."""
    d = volume_dir(node, vol, project)
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    random_file(os.path.join(d, "data.bin"), size)
    random_file(os.path.join(d, "sub", "small.bin"), size // 4096)
    return tree_digest(d)


def volumes(node, project="default"):
    """The custom volumes a member holds, as the member's own admin sees them: {name: (config, description)}."""
    out = member_lxc(node, "query", f"/1.0/storage-pools/pool1/volumes/custom?recursion=1&project={project}&target={node}").stdout
    return {v["name"]: (v["config"], v["description"]) for v in json.loads(out) if v["location"] == node}


def member_ops(node):
    """Descriptions of the operations running on a member."""
    out = json.loads(member_lxc(node, "query", f"/1.0/operations?recursion=1&target={node}").stdout)
    return [op["description"] for ops in out.values() for op in ops if op["location"] == node and op["status"] == "Running"]


def posts(debug_output):
    """The POSTs an `incus --debug` run sent."""
    return [ln for ln in debug_output.splitlines() if "Sending request" in ln and "method=POST" in ln]


@pytest.fixture
def vol(incus):
    """A fresh volume v-src on node1 with data; whatever the test made is deleted afterwards on every member."""
    made = []

    def make(name="v-src", node="node1", *extra):
        incus("storage", "volume", "create", "gw:pool1", name, "--target", node, *extra)
        made.append(name)
        return name

    yield make
    for node in ("node1", "node2", "node3"):
        for name in volumes(node):
            if name.startswith("v-"):
                member_lxc(node, "storage", "volume", "delete", "pool1", name, "--target", node, check=False)


def projects_has(name):
    return name in member_lxc("node1", "project", "list", "--format", "csv").stdout


def test_extension_advertised_while_the_cluster_lacks_it(gateway, env):
    direct = json.loads(member_lxc("node1", "query", "/1.0").stdout)
    assert EXT not in direct["api_extensions"]
    for cert in ((env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]), (env["LXDGW_UNTRUSTED_CERT"], env["LXDGW_UNTRUSTED_KEY"])):
        deadline = time.time() + 5  # advertised once every member answered its first probe (milliseconds after start)
        while True:
            code, body = curl(gateway.url + "/1.0", *cert)
            if body["metadata"]["api_extensions"].count(EXT) == 1 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert code == 200 and body["metadata"]["api_extensions"].count(EXT) == 1, body["metadata"]["auth"]


def test_incus_copy_is_one_post_and_data_arrives(incus, vol):
    vol()
    digest = fill("node1", "v-src")
    incus("storage", "volume", "set", "gw:pool1", "v-src", "user.purpose=e2e", "--target", "node1")
    out = incus("storage", "volume", "copy", "gw:pool1/v-src", "gw:pool1/v-dst", "--target", "node1", "--destination-target",
                "node2", "--debug")
    sent = posts(out.stderr)
    assert len(sent) == 1 and "/1.0/storage-pools/pool1/volumes/custom?target=node2" in sent[0], sent
    assert tree_digest(volume_dir("node2", "v-dst")) == digest
    assert volumes("node2")["v-dst"][0].get("user.purpose") == "e2e"
    assert tree_digest(volume_dir("node1", "v-src")) == digest  # the source is only read
    assert "v-dst" not in volumes("node1") and "v-dst" not in volumes("node3")


def test_snapshots_come_along_unless_volume_only(incus, vol):
    vol()
    first = fill("node1", "v-src")
    incus("storage", "volume", "snapshot", "create", "gw:pool1", "v-src", "snap0", "--target", "node1")
    # another size: rsync (LXD's dir transfer) skips a file of equal size and mtime, and both writes may share a second
    second = fill("node1", "v-src", size=3 * MiB)
    incus("storage", "volume", "snapshot", "create", "gw:pool1", "v-src", "snap1", "--target", "node1")
    incus("storage", "volume", "copy", "gw:pool1/v-src", "gw:pool1/v-all", "--target", "node1", "--destination-target", "node3")
    assert tree_digest(snapshot_dir("node1", "v-src", "snap1")) == second
    assert tree_digest(snapshot_dir("node3", "v-all", "snap0")) == first
    assert tree_digest(snapshot_dir("node3", "v-all", "snap1")) == second
    assert tree_digest(volume_dir("node3", "v-all")) == second
    incus("storage", "volume", "copy", "gw:pool1/v-src", "gw:pool1/v-only", "--target", "node1", "--destination-target", "node3",
          "--volume-only")
    assert tree_digest(volume_dir("node3", "v-only")) == second
    assert not os.path.exists(f"{CLUSTER_DIR}/node3/storage-pools/pool1/custom-snapshots/default_v-only/snap0")
    snaps = json.loads(member_lxc("node3", "query", "/1.0/storage-pools/pool1/volumes/custom/v-only/snapshots?target=node3").stdout)
    assert snaps == []


def test_refresh_brings_the_target_up_to_date(incus, vol):
    vol()
    fill("node1", "v-src")
    incus("storage", "volume", "copy", "gw:pool1/v-src", "gw:pool1/v-dst", "--target", "node1", "--destination-target", "node2")
    newer = fill("node1", "v-src", size=2 * MiB)
    assert tree_digest(volume_dir("node2", "v-dst")) != newer
    out = incus("storage", "volume", "copy", "gw:pool1/v-src", "gw:pool1/v-dst", "--target", "node1", "--destination-target",
                "node2", "--refresh", "--debug")
    assert len(posts(out.stderr)) == 1
    assert tree_digest(volume_dir("node2", "v-dst")) == newer


def test_copy_into_another_project(incus, vol):
    member_lxc("node1", "project", "create", "p-copy", "-c", "features.storage.volumes=true", check=False)
    try:
        vol()
        digest = fill("node1", "v-src")
        out = incus("storage", "volume", "copy", "gw:pool1/v-src", "gw:pool1/v-dst", "--target", "node1", "--destination-target",
                    "node2", "--target-project", "p-copy", "--debug")
        assert len(posts(out.stderr)) == 1
        assert tree_digest(volume_dir("node2", "v-dst", "p-copy")) == digest
        assert "v-dst" not in volumes("node2")  # not in the default project
    finally:
        for node in ("node1", "node2", "node3"):
            for name in volumes(node, "p-copy") if projects_has("p-copy") else ():
                member_lxc(node, "storage", "volume", "delete", "pool1", name, "--target", node, "--project", "p-copy", check=False)
        member_lxc("node1", "project", "delete", "p-copy", check=False)


def test_copy_into_another_pool(incus, vol):
    """source.pool differs from the pool in the path: a second dir pool, made on every member as LXD requires."""
    nodes = ("node1", "node2", "node3")
    for n in nodes:
        member_lxc("node1", "storage", "create", "pool-b", "dir", "--target", n, check=False)
    member_lxc("node1", "storage", "create", "pool-b", "dir", check=False)
    try:
        vol()
        digest = fill("node1", "v-src")
        out = incus("storage", "volume", "copy", "gw:pool1/v-src", "gw:pool-b/v-dst", "--target", "node1", "--destination-target",
                    "node2", "--debug")
        assert len(posts(out.stderr)) == 1
        assert tree_digest(f"{CLUSTER_DIR}/node2/storage-pools/pool-b/custom/default_v-dst") == digest
        assert "v-dst" not in volumes("node2")  # not in pool1
    finally:
        member_lxc("node2", "storage", "volume", "delete", "pool-b", "v-dst", "--target", "node2", check=False)
        member_lxc("node1", "storage", "delete", "pool-b", check=False)


def test_block_volume(incus, vol):
    vol("v-src", "node1", "--type=block", "size=24MiB")
    img = os.path.join(volume_dir("node1", "v-src"), "root.img")
    with open(img, "r+b") as f:  # data at both ends of the disk
        f.write(os.urandom(MiB))
        f.seek(20 * MiB)
        f.write(os.urandom(MiB))
    digest = tree_digest(volume_dir("node1", "v-src"))
    out = incus("storage", "volume", "copy", "gw:pool1/v-src", "gw:pool1/v-dst", "--target", "node1", "--destination-target",
                "node2", "--debug")
    assert len(posts(out.stderr)) == 1
    assert tree_digest(volume_dir("node2", "v-dst")) == digest
    info = json.loads(member_lxc("node2", "query", "/1.0/storage-pools/pool1/volumes/custom/v-dst?target=node2").stdout)
    assert info["content_type"] == "block"


def test_incus_move_across_members(incus, vol):
    vol()
    digest = fill("node1", "v-src")
    incus("storage", "volume", "move", "gw:pool1/v-src", "gw:pool1/v-moved", "--target", "node1", "--destination-target", "node3")
    assert tree_digest(volume_dir("node3", "v-moved")) == digest
    assert "v-src" not in volumes("node1")


def test_lxc_5_0_2_still_copies_with_three_calls(lxc, vol):
    """lxc 5.0.2 does not know the extension: it keeps the 3-call path, which the gateway passes through."""
    vol()
    digest = fill("node1", "v-src")
    out = lxc.run("storage", "volume", "copy", "gw:pool1/v-src", "gw:pool1/v-dst", "--target", "node1", "--destination-target",
                  "node2", "--debug")
    sent = [ln for ln in out.stderr.splitlines() if "Sending request" in ln and "method=POST" in ln]
    assert len(sent) == 2, sent  # migration source, then the pull on the target
    assert tree_digest(volume_dir("node2", "v-dst")) == digest


def raw_copy(gateway, env, body, query="target=node2"):
    return curl(f"{gateway.url}/1.0/storage-pools/pool1/volumes/custom?{query}", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"],
                method="POST", data=body)


def test_raw_api_one_post_one_operation(gateway, env, vol):
    vol()
    digest = fill("node1", "v-src")
    code, body = raw_copy(gateway, env, {"name": "v-dst", "type": "custom", "config": {"user.k": "v"}, "description": "raw",
                                         "content_type": "filesystem",
                                         "source": {"type": "copy", "name": "v-src", "pool": "pool1", "location": "node1",
                                                    "volume_only": False, "refresh": False}})
    assert code == 202 and body["type"] == "async", body
    op = body["metadata"]
    assert op["class"] == "task" and op["location"] == "node2", op
    code, done = curl(f"{gateway.url}/1.0/operations/{op['id']}/wait?timeout=60", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    assert code == 200 and done["metadata"]["status"] == "Success", done
    assert tree_digest(volume_dir("node2", "v-dst")) == digest
    assert volumes("node2")["v-dst"] == ({"user.k": "v"}, "raw")


def unchanged(before):
    return {n: volumes(n) for n in ("node1", "node2", "node3")} == before


@pytest.mark.parametrize("case", ["name-taken", "unknown-target", "unknown-location", "no-source", "snapshot-source",
                                  "no-name", "bad-json"])
def test_refused_copy_changes_nothing(gateway, env, incus, vol, case):
    vol()
    fill("node1", "v-src")
    incus("storage", "volume", "create", "gw:pool1", "v-taken", "--target", "node2")
    incus("storage", "volume", "snapshot", "create", "gw:pool1", "v-src", "s0", "--target", "node1")
    before = {n: volumes(n) for n in ("node1", "node2", "node3")}
    src = {"type": "copy", "name": "v-src", "pool": "pool1", "location": "node1"}
    body, query, want = {"name": "v-new", "type": "custom", "source": src}, "target=node2", None
    if case == "name-taken":
        body["name"], want = "v-taken", (409, "Volume by that name already exists")
    elif case == "unknown-target":
        query, want = "target=node9", (404, 'Cluster member not found: "node9" (target)')
    elif case == "unknown-location":
        src["location"], want = "node9", (404, 'Cluster member not found: "node9" (source.location)')
    elif case == "no-source":
        src["name"], want = "v-none", (404, "Storage volume not found")
    elif case == "snapshot-source":
        src["name"], want = "v-src/s-none", (404, "not found")  # (a snapshot that exists is copied: test_snapshot_copy.py)
    elif case == "no-name":
        del body["name"]
        want = (400, "No name provided")
    elif case == "bad-json":
        body, want = '{"name": "v-new", "source": {"type": "copy", ', (400, "")
    code, answer = raw_copy(gateway, env, body, query)
    assert code == want[0] and answer["type"] == "error" and answer["error_code"] == want[0], answer
    assert want[1] in answer["error"], answer
    assert unchanged(before)
    assert "Migrating storage volume" not in member_ops("node1")  # no migration source was started


def test_step_two_refused_leaves_nothing_behind(gateway, env, vol):
    """The target refuses step 2 after step 1 ran (a project limit none of the checks knows): the caller gets the
    member's error, no volume appears, and the source's migration operation ends at once (LXD 5.0.2 cannot cancel
    it and would wait 10 s for a sink; the gateway hangs up its websockets)."""
    member_lxc("node1", "project", "create", "p-copy", "-c", "features.storage.volumes=true", "-c", "limits.disk=50MiB", check=False)
    try:
        vol()
        fill("node1", "v-src")
        before = {n: volumes(n, "p-copy") for n in ("node1", "node2", "node3")}
        code, answer = raw_copy(gateway, env, {"name": "v-big", "type": "custom", "config": {"size": "1GiB"},
                                               "source": {"type": "copy", "name": "v-src", "pool": "pool1", "location": "node1",
                                                          "project": "default"}}, "target=node2&project=p-copy")
        assert code == 500 and answer["type"] == "error" and "limits.disk" in answer["error"], answer
        assert {n: volumes(n, "p-copy") for n in ("node1", "node2", "node3")} == before
        started = time.time()
        while "Migrating storage volume" in member_ops("node1"):
            assert time.time() < started + 5, "the source's migration operation lingers"
            time.sleep(0.5)
        print(f"source operation gone {time.time() - started:.1f} s after the refusal")
    finally:
        member_lxc("node1", "project", "delete", "p-copy", check=False)


def test_restricted_client_cannot_copy_across_projects(gateway, vol, incus, tmp_path):
    """A certificate restricted to p-r copies inside p-r, and LXD refuses it out of default and into default."""
    from test_identity import fingerprint, new_cert
    member_lxc("node1", "project", "create", "p-r", "-c", "features.storage.volumes=true", check=False)
    crt, key = new_cert(tmp_path, "restricted-copy")
    member_lxc("node1", "config", "trust", "add", crt, "--restricted", "--projects", "p-r")
    try:
        gateway.wait_trusted(crt, key)
        vol()  # v-src in default, on node1
        member_lxc("node1", "storage", "volume", "create", "pool1", "v-r", "--target", "node1", "--project", "p-r")
        digest = fill("node1", "v-r", "p-r")
        src = {"type": "copy", "name": "v-r", "pool": "pool1", "location": "node1"}
        url = f"{gateway.url}/1.0/storage-pools/pool1/volumes/custom?target=node2"
        code, body = curl(url + "&project=p-r", crt, key, "POST", {"name": "v-r2", "type": "custom", "source": src})
        assert code == 202, body
        code, body = curl(f"{gateway.url}/1.0/operations/{body['metadata']['id']}/wait?timeout=60&project=p-r", crt, key)
        assert body["metadata"]["status"] == "Success", body
        assert tree_digest(volume_dir("node2", "v-r2", "p-r")) == digest
        before = {n: (volumes(n), volumes(n, "p-r")) for n in ("node1", "node2", "node3")}
        out_of = dict(src, name="v-src", project="default")
        code, body = curl(url + "&project=p-r", crt, key, "POST", {"name": "v-x", "type": "custom", "source": out_of})
        assert code == 403 and body["type"] == "error", body
        code, body = curl(url + "&project=default", crt, key, "POST", {"name": "v-x", "type": "custom",
                                                                        "source": dict(src, project="p-r")})
        assert code == 403 and body["type"] == "error", body
        assert {n: (volumes(n), volumes(n, "p-r")) for n in ("node1", "node2", "node3")} == before
    finally:
        member_lxc("node1", "config", "trust", "remove", fingerprint(crt)[:12], check=False)
        for node in ("node1", "node2", "node3"):
            for name in volumes(node, "p-r"):
                member_lxc(node, "storage", "volume", "delete", "pool1", name, "--target", node, "--project", "p-r", check=False)
        member_lxc("node1", "project", "delete", "p-r", check=False)
