"""Copy one snapshot to another member (storage_api_remote_volume_snapshot_copy, LXD 5.17 and 5.0.3), which LXD 5.0.2
lacks, on the real cluster. The gateway composes what 5.0.2 can do: a temporary volume made from the snapshot on its
own member (marked `user.lxd-gateway.move: <operation id>`), moved to the target as the new volume, then removed. One
operation for the client; journaled like a move, so that a crash at any step leaves no temporary volume and never
touches the source volume or its snapshots.

Crash tests use LXDGW_TEST_PAUSE_AT=<step> (the gateway freezes right after journaling <step>), SIGKILL, restart."""
import json
import os
import time

import pytest

from conftest import member_lxc
from helpers import MiB, curl, tree_digest, volume_dir
from test_copy import fill, posts, snapshot_dir, volumes
from test_move import NODES, transfer_under_way
from test_move_safety import after_crash_test, crash_gateway, ended, log_mark, start_ready, steps_of

EXT = "storage_api_remote_volume_snapshot_copy"
DIRECT = "https://127.0.0.11:8443"  # node1, without the gateway
MARK = "user.lxd-gateway.move"
TEMP = "lxd-gateway-snapshot-copy-"  # the temporary volume's name starts so


def everything(project="default"):
    return {n: volumes(n, project) for n in NODES}


def temporaries(project="default"):
    return {n: [v for v in volumes(n, project) if v.startswith(TEMP)] for n in NODES}


def no_temporaries(project="default"):
    assert temporaries(project) == {n: [] for n in NODES}, temporaries(project)


@pytest.fixture
def src():
    """v-sc on node1: snap0 holds the first data, the volume newer data; user config on both (the snapshot keeps the
    config the volume had when it was taken). Every v-sc* volume and every temporary one is removed afterwards."""
    def drop():
        for n in NODES:
            for name in volumes(n):
                if name.startswith("v-sc") or name.startswith(TEMP):
                    member_lxc(n, "storage", "volume", "delete", "pool1", name, "--target", n, check=False)
    drop()
    member_lxc("node1", "storage", "volume", "create", "pool1", "v-sc", "--target", "node1")
    member_lxc("node1", "storage", "volume", "set", "pool1", "v-sc", "user.when=snap0", "--target", "node1")
    first = fill("node1", "v-sc")
    member_lxc("node1", "storage", "volume", "snapshot", "pool1", "v-sc", "snap0", "--target", "node1")
    member_lxc("node1", "storage", "volume", "set", "pool1", "v-sc", "user.when=now", "--target", "node1")
    second = fill("node1", "v-sc", size=3 * MiB)
    yield {"snap0": first, "now": second}
    drop()


def assert_source_intact(data):
    """v-sc holds data["now"]; every other key of `data` is a snapshot of it, with that content, and it has no other"""
    names = sorted(k for k in data if k != "now")
    assert tree_digest(volume_dir("node1", "v-sc")) == data["now"]
    for name in names:
        assert tree_digest(snapshot_dir("node1", "v-sc", name)) == data[name], name
    assert volumes("node1")["v-sc"][0] == {"user.when": "now"}, volumes("node1")["v-sc"]
    snaps = json.loads(member_lxc("node1", "query", "/1.0/storage-pools/pool1/volumes/custom/v-sc/snapshots?target=node1").stdout)
    assert sorted(snaps) == [f"/1.0/storage-pools/pool1/volumes/custom/v-sc/snapshots/{n}" for n in names], snaps


def assert_copied(data, node="node2", name="v-sc2", config=None):
    assert tree_digest(volume_dir(node, name)) == data["snap0"]
    assert volumes(node)[name][0] == (config if config is not None else {"user.when": "snap0"}), volumes(node)[name]
    snaps = json.loads(member_lxc(node, "query", f"/1.0/storage-pools/pool1/volumes/custom/{name}/snapshots?target={node}").stdout)
    assert snaps == [], snaps
    assert [n for n in NODES if name in volumes(n)] == [node]


def post_copy(url, cert, key, body, query="target=node2"):
    return curl(f"{url}/1.0/storage-pools/pool1/volumes/custom?{query}", cert, key, method="POST", data=body)


def snap_body(name="v-sc2", snap="v-sc/snap0", **extra):
    return dict({"name": name, "type": "custom", "source": {"type": "copy", "name": snap, "pool": "pool1", "location": "node1"}},
                **extra)


def wait_op(url, cert, key, op_id, timeout=120):
    code, body = curl(f"{url}/1.0/operations/{op_id}/wait?timeout={timeout}", cert, key, timeout=timeout + 10)
    assert code == 200, body
    return body["metadata"]


def test_extension_advertised_while_the_cluster_lacks_it(gateway, env):
    direct = json.loads(member_lxc("node1", "query", "/1.0").stdout)
    assert EXT not in direct["api_extensions"]
    code, body = curl(gateway.url + "/1.0", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    assert code == 200 and body["metadata"]["api_extensions"].count(EXT) == 1, body["metadata"]["api_extensions"]


def test_incus_copies_a_snapshot_to_another_member_in_one_call(incus, src):
    out = incus("storage", "volume", "copy", "gw:pool1/v-sc/snap0", "gw:pool1/v-sc2", "--target", "node1",
                "--destination-target", "node2", "--debug")
    sent = posts(out.stderr)
    assert len(sent) == 1 and "/1.0/storage-pools/pool1/volumes/custom?target=node2" in sent[0], sent
    assert_copied(src)
    assert_source_intact(src)
    no_temporaries()


def test_raw_api_one_operation(gateway, env, src):
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    code, body = post_copy(gateway.url, cert, key, snap_body(config={"user.k": "v"}, description="from a snapshot"))
    assert code == 202 and body["type"] == "async", body
    op = body["metadata"]
    assert op["class"] == "task" and op["description"] == "Copying storage volume" and op["location"] == "node2", op
    assert op["may_cancel"] is True, op
    done = wait_op(gateway.url, cert, key, op["id"])
    assert done["status"] == "Success", done
    assert_copied(src, config={"user.k": "v"})
    assert volumes("node2")["v-sc2"][1] == "from a snapshot"
    assert_source_intact(src)
    no_temporaries()


def copy_big_snapshot(gateway, env, src):
    """v-sc filled with 256 MiB, snapshotted as `big` (its digest in src["big"], the volume's in src["now"]), and the
    copy of v-sc/big asked: the operation's id."""
    src["now"] = fill("node1", "v-sc", size=256 * MiB)  # (the volume, not the snapshot: the snapshot is what travels)
    member_lxc("node1", "storage", "volume", "snapshot", "pool1", "v-sc", "big", "--target", "node1")
    src["big"] = tree_digest(snapshot_dir("node1", "v-sc", "big"))
    code, body = post_copy(gateway.url, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"], snap_body(snap="v-sc/big"))
    assert code == 202, body
    return body["metadata"]["id"]


def test_one_operation_with_progress(gateway, env, src):
    """A snapshot of 256 MiB: the client's one operation shows the transfer's progress while it runs (the target's
    `fs_progress`, relayed as a string); before that, while its member makes the temporary volume (LXD 5.0.2 shows no
    progress for that copy either), it runs with no progress key. It ends Success with the snapshot's data."""
    op_id = copy_big_snapshot(gateway, env, src)
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    op = transfer_under_way(gateway, env, op_id, timeout=90)  # (Running, at least one *_progress string)
    assert op["id"] == op_id and op["description"] == "Copying storage volume", op
    print("progress shown:", {k: v for k, v in op["metadata"].items() if k.endswith("_progress")})
    done = wait_op(gateway.url, cert, key, op_id)
    assert done["status"] == "Success", done
    assert tree_digest(volume_dir("node2", "v-sc2")) == src["big"]
    assert_source_intact(src)
    no_temporaries()


def test_block_snapshot(gateway, env, src):
    member_lxc("node1", "storage", "volume", "create", "pool1", "v-sc-blk", "--target", "node1", "--type=block", "size=16MiB")
    img = os.path.join(volume_dir("node1", "v-sc-blk"), "root.img")
    with open(img, "r+b") as f:
        f.write(os.urandom(MiB))
    digest = tree_digest(volume_dir("node1", "v-sc-blk"))
    member_lxc("node1", "storage", "volume", "snapshot", "pool1", "v-sc-blk", "s", "--target", "node1")
    with open(img, "r+b") as f:
        f.write(os.urandom(MiB))
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    code, body = post_copy(gateway.url, cert, key, snap_body("v-sc-blk2", "v-sc-blk/s"))
    assert code == 202, body
    assert wait_op(gateway.url, cert, key, body["metadata"]["id"])["status"] == "Success"
    assert tree_digest(volume_dir("node2", "v-sc-blk2")) == digest
    info = json.loads(member_lxc("node2", "query", "/1.0/storage-pools/pool1/volumes/custom/v-sc-blk2?target=node2").stdout)
    assert info["content_type"] == "block", info
    no_temporaries()


@pytest.mark.parametrize("case", ["no-snapshot", "no-volume", "name-taken", "bad-snapshot-name", "refresh", "unknown-target"])
def test_refused_snapshot_copy_changes_nothing(gateway, env, src, case):
    member_lxc("node2", "storage", "volume", "create", "pool1", "v-sc-taken", "--target", "node2")
    before = everything()
    body, query = snap_body(), "target=node2"
    if case == "no-snapshot":
        body["source"]["name"], want = "v-sc/nope", (404, "not found")
    elif case == "no-volume":
        body["source"]["name"], want = "v-sc-none/snap0", (404, "not found")
    elif case == "name-taken":
        body["name"], want = "v-sc-taken", (409, "Volume by that name already exists")
    elif case == "bad-snapshot-name":
        body["source"]["name"], want = "v-sc/snap0/x", (400, "Invalid snapshot name")
    elif case == "refresh":
        body["source"]["refresh"], want = True, (400, "cannot be refreshed from a single snapshot")
    elif case == "unknown-target":
        query, want = "target=node9", (404, 'Cluster member not found: "node9" (target)')
    code, answer = post_copy(gateway.url, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"], body, query)
    assert code == want[0] and answer["type"] == "error" and answer["error_code"] == want[0], answer
    assert want[1].lower() in answer["error"].lower(), answer
    assert everything() == before


def test_cancel_removes_the_copy_and_the_temporary_volume(gateway, env, src):
    """Cancelled at once: the temporary volume is still being made (LXD 5.0.2 cannot cancel that copy: it ends first),
    or the transfer runs (its data path is cut). Either way: Cancelled, nothing left, the source untouched."""
    op_id = copy_big_snapshot(gateway, env, src)
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    code, answer = curl(f"{gateway.url}/1.0/operations/{op_id}", cert, key, method="DELETE")
    assert code == 200, answer
    done = wait_op(gateway.url, cert, key, op_id)
    assert done["status"] == "Cancelled", done
    assert_source_intact(src)  # the volume, snap0 and big, their data and config
    assert "v-sc2" not in volumes("node2")
    no_temporaries()


def test_restricted_caller_copies_only_what_lxd_lets_it(gateway, tmp_path):
    """A certificate restricted to p-sc copies a snapshot inside p-sc; out of default it is refused before anything
    is made (no temporary volume in default), with what LXD answers that certificate for the snapshot directly."""
    from test_identity import fingerprint, new_cert
    member_lxc("node1", "project", "create", "p-sc", "-c", "features.storage.volumes=true", check=False)
    crt, key = new_cert(tmp_path, "restricted-snapcopy")
    member_lxc("node1", "config", "trust", "add", crt, "--restricted", "--projects", "p-sc")
    try:
        gateway.wait_trusted(crt, key)
        member_lxc("node1", "storage", "volume", "create", "pool1", "v-sc-r", "--target", "node1", "--project", "p-sc")
        digest = fill("node1", "v-sc-r", "p-sc")
        member_lxc("node1", "storage", "volume", "snapshot", "pool1", "v-sc-r", "s", "--target", "node1", "--project", "p-sc")
        member_lxc("node1", "storage", "volume", "create", "pool1", "v-sc-d", "--target", "node1")
        member_lxc("node1", "storage", "volume", "snapshot", "pool1", "v-sc-d", "s", "--target", "node1")
        code, body = post_copy(gateway.url, crt, key, snap_body("v-sc-r2", "v-sc-r/s"), "target=node2&project=p-sc")
        assert code == 202, body
        assert wait_op(gateway.url, crt, key, body["metadata"]["id"])["status"] == "Success"
        assert tree_digest(volume_dir("node2", "v-sc-r2", "p-sc")) == digest
        no_temporaries("p-sc")
        before = (everything(), everything("p-sc"))
        out_of = snap_body("v-sc-x", "v-sc-d/s")
        out_of["source"]["project"] = "default"
        code, body = post_copy(gateway.url, crt, key, out_of, "target=node2&project=p-sc")
        assert code == 403 and body["type"] == "error", body
        dcode, direct = curl(f"{DIRECT}/1.0/storage-pools/pool1/volumes/custom/v-sc-d/snapshots/s?project=default&target=node1",
                             crt, key)  # LXD's own answer to that certificate, for the source snapshot
        assert (code, body["error"]) == (dcode, direct["error"]), (body, direct)
        assert (everything(), everything("p-sc")) == before
    finally:
        member_lxc("node1", "config", "trust", "remove", fingerprint(crt)[:12], check=False)
        for node in NODES:
            for name in volumes(node, "p-sc"):
                member_lxc(node, "storage", "volume", "delete", "pool1", name, "--target", node, "--project", "p-sc", check=False)
            for name in volumes(node):
                if name.startswith("v-sc"):
                    member_lxc(node, "storage", "volume", "delete", "pool1", name, "--target", node, check=False)
        member_lxc("node1", "project", "delete", "p-sc", check=False)


# ---- a crash at each journaled step ----

@pytest.fixture(scope="module")
def crashgw(tmp_path_factory):
    yield from crash_gateway(tmp_path_factory, "127.0.0.1:8487", "snapcopy-crash-gateway")


@pytest.fixture
def crashable(crashgw):
    yield crashgw
    after_crash_test(crashgw)


# step journaled -> what recovery makes of it
CRASH_STEPS = {
    "temp": "rolled-back",           # before the temporary volume's copy was asked for
    "temp-copying": "rolled-back",   # its copy runs (or ran): it is let end, then removed
    "begin": "rolled-back",          # the temporary volume exists, nothing on the target
    "transferring": "rolled-back",   # the transfer runs: let end, then the marked target and the temporary one go
    "transferred": "copied",         # the marked copy is on the target: the temporary volume goes, the mark comes off
    "dropping-temp": "copied",       # the copy is done: what is left of the temporary volume goes
}


@pytest.mark.parametrize("step", list(CRASH_STEPS))
def test_crash_at_each_step_leaves_no_temporary_volume(crashable, env, src, step):
    gw = crashable
    mark = log_mark(gw)
    start_ready(gw, env, {"LXDGW_TEST_PAUSE_AT": step})
    code, body = post_copy(gw.url, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"], snap_body())
    assert code == 202, body
    copy_id = body["metadata"]["id"]
    gw.wait_log(f'msg="paused for a test" step={step}', mark)
    gw.kill()
    assert steps_of(gw.state, copy_id)[-1] == step
    mark = log_mark(gw)
    gw.start()
    gw.wait_log("found an interrupted move", mark)
    outcome, line = ended(gw, copy_id, mark)
    assert outcome == CRASH_STEPS[step], line
    assert_source_intact(src)
    no_temporaries()
    if outcome == "copied":
        assert_copied(src, config={})  # (the request named no config: the new volume has none, as natively)
        assert MARK not in volumes("node2")["v-sc2"][0]
    else:
        assert "v-sc2" not in volumes("node2"), everything()
    deadline = time.time() + 10  # the journal's "end" is written right after the log line
    while steps_of(gw.state, copy_id)[-1:] != ["end"]:
        assert time.time() < deadline, steps_of(gw.state, copy_id)
        time.sleep(0.2)


def test_crash_while_rolling_back_a_cancelled_copy(crashable, env, src):
    """Cancelled, so rolled back, and killed right after "rolling-back" was journaled: the restart removes the
    temporary volume; nothing on the target, the source intact."""
    gw, cert, key = crashable, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    fill("node1", "v-sc", size=64 * MiB)
    member_lxc("node1", "storage", "volume", "snapshot", "pool1", "v-sc", "big", "--target", "node1")
    mark = log_mark(gw)
    start_ready(gw, env, {"LXDGW_TEST_PAUSE_AT": "rolling-back"})
    code, body = post_copy(gw.url, cert, key, snap_body(snap="v-sc/big"))
    assert code == 202, body
    copy_id = body["metadata"]["id"]
    code, answer = curl(f"{gw.url}/1.0/operations/{copy_id}", cert, key, method="DELETE")
    assert code == 200, answer
    gw.wait_log('msg="paused for a test" step=rolling-back', mark, timeout=120)
    gw.kill()
    mark = log_mark(gw)
    gw.start()
    outcome, line = ended(gw, copy_id, mark)
    assert outcome == "rolled-back", line
    no_temporaries()
    assert "v-sc2" not in volumes("node2")
    assert tree_digest(volume_dir("node1", "v-sc")) != src["now"]  # (the 64 MiB fill)
    assert tree_digest(snapshot_dir("node1", "v-sc", "snap0")) == src["snap0"]
