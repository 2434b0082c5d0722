"""Single-call move issue: one POST moves a custom volume to another member as ONE gateway operation, on the real
LXD 5.0.2 cluster; a crash of the gateway at any step loses no volume (the journal in state_dir is replayed)."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import member_lxc
from helpers import CLUSTER_DIR, MiB, Gateway, curl, late_heartbeats, sh, tree_digest, volume_dir
from test_copy import fill, snapshot_dir, volumes

NODES = ("node1", "node2", "node3")


def everywhere():
    return {n: volumes(n) for n in NODES}


def where(name):
    """The members holding volume `name` (default project, pool1)."""
    return [n for n in NODES if name in volumes(n)]


@pytest.fixture
def vol(incus):
    """v-mv on node1 with data, 2 snapshots and config; removed from every member afterwards."""
    incus("storage", "volume", "create", "gw:pool1", "v-mv", "--target", "node1")
    first = fill("node1", "v-mv")
    incus("storage", "volume", "snapshot", "create", "gw:pool1", "v-mv", "s0", "--target", "node1")
    second = fill("node1", "v-mv", size=3 * MiB)
    incus("storage", "volume", "snapshot", "create", "gw:pool1", "v-mv", "s1", "--target", "node1")
    incus("storage", "volume", "set", "gw:pool1", "v-mv", "user.owner=e2e", "--target", "node1")
    member_lxc("node1", "query", "-X", "PATCH", "-d", json.dumps({"description": "moved by one call"}),
               "/1.0/storage-pools/pool1/volumes/custom/v-mv?target=node1")
    yield {"digest": second, "s0": first, "s1": second}
    for n in NODES:
        for name in volumes(n):
            if name.startswith("v-mv"):
                member_lxc(n, "storage", "volume", "delete", "pool1", name, "--target", n, check=False)


def post_move(gw_url, env, body, target="node2", vol="v-mv"):
    return curl(f"{gw_url}/1.0/storage-pools/pool1/volumes/custom/{vol}?target={target}", env["LXDGW_CLIENT_CERT"],
                env["LXDGW_CLIENT_KEY"], method="POST", data=body)


def wait_op(gw_url, env, op_id, timeout=120):
    code, body = curl(f"{gw_url}/1.0/operations/{op_id}/wait?timeout={timeout}", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"],
                      timeout=timeout + 10)
    assert code == 200, body
    return body["metadata"]


def assert_moved(data, node="node2", name="v-mv"):
    assert tree_digest(volume_dir(node, name)) == data["digest"]
    assert tree_digest(snapshot_dir(node, name, "s0")) == data["s0"]
    assert tree_digest(snapshot_dir(node, name, "s1")) == data["s1"]
    config, description = volumes(node)[name]
    assert config.get("user.owner") == "e2e" and description == "moved by one call", (config, description)


def test_raw_api_move_is_one_operation(gateway, env, lxc, vol):
    code, body = post_move(gateway.url, env, {"name": "v-mv", "migration": True, "source": {"location": "node1"}})
    assert code == 202 and body["type"] == "async", body
    op = body["metadata"]
    assert op["class"] == "task" and op["description"] == "Moving storage volume" and op["status"] == "Running", op
    assert op["resources"] == {"storage_volumes": ["/1.0/storage-pools/pool1/volumes/custom/v-mv"]}
    shown = lxc.run("operation", "show", f"gw:{op['id']}").stdout  # lxc reads the gateway's own operation
    assert op["id"] in shown and "Moving storage volume" in shown, shown
    listed = json.loads(lxc.run("query", "gw:/1.0/operations").stdout)
    assert any(op["id"] in u for group in listed.values() for u in group), listed
    code, deep = curl(f"{gateway.url}/1.0/operations?recursion=1", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    assert any(o["id"] == op["id"] for group in deep["metadata"].values() for o in group), deep
    done = wait_op(gateway.url, env, op["id"])
    assert done["status"] == "Success" and done["err"] == "", done
    assert where("v-mv") == ["node2"]  # exactly once: on the target, gone from node1
    assert_moved(vol)
    time.sleep(6)  # finished operations are dropped about 5 s after they end, as in LXD
    code, _ = curl(f"{gateway.url}/1.0/operations/{op['id']}", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    assert code == 404


def test_a_member_lxd_calls_offline_for_a_late_heartbeat_still_takes_a_move(gateway, env, vol):
    """LXD calls a busy member Offline for a heartbeat round, and forwards to it all the same: so does the gateway (its
    own probes say whether a member answers). Before, such a move was refused 503 "is offline" (seen on CI's drain)."""
    late_heartbeats(gateway, ["node2"])
    code, body = post_move(gateway.url, env, {"name": "v-mv", "migration": True, "source": {"location": "node1"}})
    assert code == 202, body
    assert wait_op(gateway.url, env, body["metadata"]["id"])["status"] == "Success"
    assert where("v-mv") == ["node2"]
    assert_moved(vol)


def test_move_with_rename(gateway, env, vol):
    code, body = post_move(gateway.url, env, {"name": "v-mv-renamed", "pool": "pool1", "migration": True,
                                              "source": {"location": "node1"}}, target="node3")
    assert code == 202, body
    assert wait_op(gateway.url, env, body["metadata"]["id"])["status"] == "Success"
    assert where("v-mv") == [] and where("v-mv-renamed") == ["node3"]
    assert_moved(vol, "node3", "v-mv-renamed")


def test_move_into_another_project(gateway, env, vol):
    member_lxc("node1", "project", "create", "p-mv", "-c", "features.storage.volumes=true", check=False)
    try:
        code, body = post_move(gateway.url, env, {"name": "v-mv", "project": "p-mv", "migration": True,
                                                  "source": {"location": "node1"}})
        assert code == 202, body
        assert wait_op(gateway.url, env, body["metadata"]["id"])["status"] == "Success"
        assert where("v-mv") == [] and "v-mv" in volumes("node2", "p-mv")
        assert tree_digest(volume_dir("node2", "v-mv", "p-mv")) == vol["digest"]
    finally:
        member_lxc("node2", "storage", "volume", "delete", "pool1", "v-mv", "--target", "node2", "--project", "p-mv", check=False)
        member_lxc("node1", "project", "delete", "p-mv", check=False)


def test_failed_source_delete_rolls_back_and_says_so(gateway, env, vol):
    """The copy is good but LXD refuses to delete the source (attached to an instance): the move is undone (the copy
    it made removed, the source kept, untouched) and the operation fails saying why: nothing is silently doubled."""
    member_lxc("node1", "init", "busybox", "c-mv-hold", "--target", "node1")
    try:
        member_lxc("node1", "storage", "volume", "attach", "pool1", "v-mv", "c-mv-hold", "/mnt")
        code, body = post_move(gateway.url, env, {"name": "v-mv", "migration": True, "source": {"location": "node1"}})
        assert code == 202, body
        done = wait_op(gateway.url, env, body["metadata"]["id"])
        assert done["status"] == "Failure", done
        assert "Deleting the source failed" in done["err"] and "source kept" in done["err"], done
        assert where("v-mv") == ["node1"]
        assert tree_digest(volume_dir("node1", "v-mv")) == vol["digest"]
    finally:
        member_lxc("node1", "delete", "-f", "c-mv-hold", check=False)


@pytest.mark.parametrize("case", ["same-member", "unknown-target", "name-taken", "no-volume"])
def test_refused_move_changes_nothing(gateway, env, incus, vol, case):
    body, target, name, want = {"name": "v-mv", "migration": True, "source": {"location": "node1"}}, "node2", "v-mv", None
    if case == "same-member":
        target, want = "node1", (400, "source.location and target name the same member")
    elif case == "unknown-target":
        target, want = "node9", (404, 'Cluster member not found: "node9" (target)')
    elif case == "name-taken":
        incus("storage", "volume", "create", "gw:pool1", "v-mv-taken", "--target", "node2")
        body["name"], want = "v-mv-taken", (409, "Volume by that name already exists on node2")
    elif case == "no-volume":
        name, want = "v-mv-none", (404, "Storage volume not found")
    before = everywhere()
    ops_before = json.loads(member_lxc("node1", "query", "/1.0/operations").stdout)
    code, answer = post_move(gateway.url, env, body, target, name)
    assert code == want[0] and answer["type"] == "error" and want[1] in answer["error"], answer
    assert everywhere() == before
    code, listed = curl(f"{gateway.url}/1.0/operations", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    assert listed["metadata"] == ops_before or "Moving storage volume" not in json.dumps(listed)


def test_lxc_and_incus_move_across_members(lxc, incus, vol):
    lxc.run("storage", "volume", "move", "gw:pool1/v-mv", "gw:pool1/v-mv-lxc", "--target", "node1", "--destination-target", "node2")
    assert where("v-mv") == [] and where("v-mv-lxc") == ["node2"]
    assert tree_digest(volume_dir("node2", "v-mv-lxc")) == vol["digest"]
    incus("storage", "volume", "move", "gw:pool1/v-mv-lxc", "gw:pool1/v-mv-incus", "--target", "node2", "--destination-target",
          "node3")
    assert where("v-mv-lxc") == [] and where("v-mv-incus") == ["node3"]
    assert tree_digest(volume_dir("node3", "v-mv-incus")) == vol["digest"]


@pytest.fixture(scope="module")
def crashable(tmp_path_factory):
    """A second gateway with its own state dir (and journal), for crash tests; killed and restarted by the tests."""
    state = str(tmp_path_factory.mktemp("crash-gw"))
    binary = os.environ["LXDGW_BINARY"]
    sh([binary, "init", "--state-dir", state, "--listen", "127.0.0.1:8473", "--member", "https://127.0.0.11:8443",
        "--cluster-certificate", os.environ["LXDGW_CLUSTER_CERT"]])
    fp = sh(["openssl", "x509", "-in", f"{state}/identity.crt", "-noout", "-fingerprint", "-sha256"]).stdout
    member_lxc("node1", "config", "trust", "add", f"{state}/identity.crt")
    gw = Gateway(binary, state, "127.0.0.1:8473", name="crash-gateway")
    yield gw
    if gw.proc is not None and gw.proc.poll() is None:
        gw.kill()  # it may be frozen by the test hook
    member_lxc("node1", "config", "trust", "remove", fp.split("=")[1].strip().replace(":", "").lower()[:12], check=False)
    gw.check_sanitizers()


@pytest.mark.parametrize("step,outcome", [("begin", "rolled-back"), ("transferring", "rolled-back"), ("transferred", "moved")])
def test_gateway_crash_at_each_step_loses_nothing(crashable, env, vol, step, outcome):
    """SIGKILL right after the journal recorded `step`; the next start finishes or rolls back the move: the volume
    exists exactly once, with its data, snapshots and config."""
    mark = len(crashable.logtext()) if os.path.exists(crashable.logname) else 0
    crashable.start({"LXDGW_TEST_PAUSE_AT": step})
    crashable.wait_trusted(env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    time.sleep(1)  # the members' first probes (the plugins step aside until then)
    code, body = post_move(crashable.url, env, {"name": "v-mv", "migration": True, "source": {"location": "node1"}})
    assert code == 202, body
    crashable.wait_log(f'msg="paused for a test" step={step}', mark)
    crashable.kill()
    if step == "transferring":
        time.sleep(3)  # let LXD finish the transfer the dead gateway started: not recorded, so it must be undone
    mark = len(crashable.logtext())
    crashable.start()
    crashable.wait_log("found an interrupted move", mark)
    crashable.wait_log(f"outcome={outcome}", mark)
    if outcome == "moved":
        assert where("v-mv") == ["node2"]
        assert_moved(vol)
    else:
        assert where("v-mv") == ["node1"]
        assert tree_digest(volume_dir("node1", "v-mv")) == vol["digest"]
        assert tree_digest(snapshot_dir("node1", "v-mv", "s1")) == vol["s1"]
        assert volumes("node1")["v-mv"][0].get("user.owner") == "e2e"
    crashable.stop()


def start_slow_source_move(gw, env, dial_delay_ms=6000):
    """`gw` started with every relay dial of the source held `dial_delay_ms`, and v-mv's move node1 -> node2 asked of it:
    the 202's body."""
    gw.start({"LXDGW_TEST_RELAY_DIAL_DELAY_MS": str(dial_delay_ms)})
    gw.wait_trusted(env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    time.sleep(1)  # the members' first probes (the plugins step aside until then)
    code, body = post_move(gw.url, env, {"name": "v-mv", "migration": True, "source": {"location": "node1"}})
    assert code == 202, body
    return body


def test_a_slow_source_member_does_not_fail_the_transfer(crashable, env, vol):
    """LXD's migration sink gives its whole websocket dial 5 s (HandshakeTimeout). The relay answers the target at once
    and dials the source meanwhile; it used to dial first, and a busy source member once used up those 5 s (CI: "read
    tcp ... i/o timeout"). Here every dial of the source waits 6 s: the move still succeeds."""
    mark = len(crashable.logtext()) if os.path.exists(crashable.logname) else 0
    try:
        body = start_slow_source_move(crashable, env)
        done = wait_op(crashable.url, env, body["metadata"]["id"], timeout=120)
        assert done["status"] == "Success", (done, crashable.logtext()[mark:][-3000:])
        assert where("v-mv") == ["node2"]
        assert_moved(vol)
    finally:
        crashable.stop()


def test_monitor_started_before_the_post_sees_every_transition(gateway, env, lxc, vol):
    """`lxc monitor --type=operation` through the gateway: the gateway's own operation arrives on the same stream as
    the cluster's (the member-side transfer operations), from Running to Success."""
    mon = subprocess.Popen(["lxc", "monitor", "gw:", "--type=operation", "--format=json"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=dict(os.environ, LXD_CONF=lxc.conf))
    try:
        time.sleep(1.5)  # the stream is up (the monitor prints nothing until events come)
        code, body = post_move(gateway.url, env, {"name": "v-mv", "migration": True, "source": {"location": "node1"}})
        assert code == 202, body
        op_id = body["metadata"]["id"]
        assert wait_op(gateway.url, env, op_id)["status"] == "Success"
        time.sleep(1)
    finally:
        mon.terminate()
        out, err = mon.communicate(timeout=10)
    events = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
    ours = [e for e in events if e["metadata"]["id"] == op_id]
    statuses = [e["metadata"]["status"] for e in ours]
    assert statuses[0] == "Running" and statuses[-1] == "Success", (statuses, err[-2000:])
    assert all(e["type"] == "operation" and e["project"] == "default" for e in ours)
    others = {e["metadata"]["description"] for e in events if e["metadata"]["id"] != op_id}
    assert others, "the cluster's own operation events must flow on the same stream"


def transfer_under_way(gateway, env, op_id, timeout=30):
    """Waits until the operation, still Running, relays the target's progress (the transfer runs): at least one
    `*_progress` key, each a string (lxc type-asserts them); returns the operation. Fails if the operation ends, or
    shows no progress within `timeout` s."""
    deadline = time.time() + timeout
    while True:
        code, body = curl(f"{gateway.url}/1.0/operations/{op_id}", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
        assert code == 200, body
        op = body["metadata"]
        assert op["status"] == "Running", op  # (it ended before any progress was shown)
        progress = {k: v for k, v in (op["metadata"] or {}).items() if k.endswith("_progress")}
        if progress:
            assert all(isinstance(v, str) and v for v in progress.values()), op
            return op
        assert time.time() < deadline, f"no progress shown within {timeout} s: {op}"
        time.sleep(0.2)


def filled_volume(incus, name, mib):
    """Volume `name` on node1 holding `mib` MiB of random data; returns its directory and tree digest."""
    incus("storage", "volume", "create", "gw:pool1", name, "--target", "node1")
    src = volume_dir("node1", name)
    sh(["sh", "-c", f"head -c {mib * MiB} /dev/urandom > {src}/data.bin"])
    return src, tree_digest(src)


def start_move(gw_url, env, name):
    """The single-call move of `name` from node1 to node2; returns the operation's id."""
    code, body = post_move(gw_url, env, {"name": name, "migration": True, "source": {"location": "node1"}}, vol=name)
    assert code == 202, body
    return body["metadata"]["id"]


def test_cancel_mid_transfer_of_1gib(gateway, env, incus):
    """DELETE on the operation while 1 GiB is on its way: the transfer is cut (its data path is the gateway's relay),
    the partial target removed, the source untouched, the operation Cancelled (401)."""
    try:
        src, digest = filled_volume(incus, "v-mv-big", 1024)
        op_id = start_move(gateway.url, env, "v-mv-big")
        op = transfer_under_way(gateway, env, op_id)
        started = time.time()
        progress = [v for k, v in op["metadata"].items() if k.endswith("_progress")]
        assert progress and all(isinstance(v, str) for v in progress), op  # lxc type-asserts progress values as strings
        cancelled_at = time.time()
        code, answer = curl(f"{gateway.url}/1.0/operations/{op_id}", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"],
                            method="DELETE")
        assert code == 200, answer
        done = wait_op(gateway.url, env, op_id)
        print(f"cancelled {cancelled_at - started:.1f} s into the transfer, ended {time.time() - cancelled_at:.1f} s later")
        assert done["status"] == "Cancelled" and done["status_code"] == 401, done
        assert where("v-mv-big") == ["node1"]
        assert not os.path.exists(volume_dir("node2", "v-mv-big"))
        assert tree_digest(src) == digest
    finally:
        for n in NODES:
            member_lxc(n, "storage", "volume", "delete", "pool1", "v-mv-big", "--target", n, check=False)


CLUSTER = os.path.join(os.environ["LXDGW_TOP"], "tests/cluster/cluster.sh")


@pytest.mark.parametrize("victim", ["node2", "node1"])  # the target, then the source
def test_member_killed_during_the_transfer(gateway, env, incus, victim):
    """A member dies mid-transfer (SIGKILL). The move fails, the source is kept, and once the member is back any
    partial target is gone: the volume exists exactly once, with its data and config."""
    try:
        src, digest = filled_volume(incus, "v-mv-kill", 1024)
        incus("storage", "volume", "set", "gw:pool1", "v-mv-kill", "user.owner=e2e", "--target", "node1")
        op_id = start_move(gateway.url, env, "v-mv-kill")
        transfer_under_way(gateway, env, op_id)
        sh(["bash", CLUSTER, "kill", victim])
        try:
            done = wait_op(gateway.url, env, op_id)
            assert done["status"] == "Failure" and done["err"], done
        finally:
            sh(["bash", CLUSTER, "start", victim])
            sh(["bash", CLUSTER, "settle"], timeout=180)
        deadline = time.time() + 60  # a partial target left on a dead member is removed once it is back
        while where("v-mv-kill") != ["node1"] and time.time() < deadline:
            time.sleep(1)
        assert where("v-mv-kill") == ["node1"]
        assert tree_digest(src) == digest
        assert volumes("node1")["v-mv-kill"][0].get("user.owner") == "e2e"
        gateway.wait_log(f"move={op_id} outcome=rolled-back", timeout=15)  # written once the member has answered
    finally:
        for n in NODES:
            member_lxc(n, "storage", "volume", "delete", "pool1", "v-mv-kill", "--target", n, check=False)


def test_sigterm_drains_a_running_move(crashable, env, incus):
    """SIGTERM during a move: the gateway stops accepting at once, lets the move end, then exits; nothing for the
    journal to replay."""
    try:
        src, digest = filled_volume(incus, "v-mv-drain", 256)
        mark = len(crashable.logtext()) if os.path.exists(crashable.logname) else 0
        crashable.start()
        crashable.wait_trusted(env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
        transfer_under_way(crashable, env, start_move(crashable.url, env, "v-mv-drain"))
        crashable.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert crashable.proc.poll() is None, "it must wait for the running move"
        refused = sh(["curl", "-sk", "--max-time", "5", crashable.url + "/1.0"], check=False)
        assert refused.returncode != 0, "no new connections once draining"
        assert crashable.proc.wait(90) == 0
        log = crashable.logtext()[mark:]
        assert "outcome=moved" in log and 'msg=drained' in log, log[-3000:]
        assert where("v-mv-drain") == ["node2"] and tree_digest(volume_dir("node2", "v-mv-drain")) == digest
    finally:
        for n in NODES:
            member_lxc(n, "storage", "volume", "delete", "pool1", "v-mv-drain", "--target", n, check=False)
