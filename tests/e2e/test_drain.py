"""Draining a member of its custom volumes (what no LXD does: `lxc cluster evacuate` leaves them,
canonical/lxd#15218), on the real cluster: `POST /lxd-gateway/members/<member>/drain`, one operation, each volume
moved by the single-call move's journaled flow, a report of what stayed and why.

The volumes live in projects of their own (p-drain*), so that a drain never touches another test's volumes.
Crash tests use LXDGW_TEST_PAUSE_AT=<step> (the gateway freezes right after journaling <step>), SIGKILL, restart."""
import json
import os
import shutil
import signal
import threading
import time

import pytest

from conftest import member_lxc
from helpers import CLUSTER_DIR, MiB, curl, late_heartbeats, sh, tree_digest, volume_dir
from test_adoption import assert_no_flow_left
from test_copy import fill, snapshot_dir, volumes
from test_move import NODES
from test_move_safety import after_crash_test, crash_gateway, log_mark, start_ready

P = "p-drain"


def where(name, project=P):
    return [n for n in NODES if name in volumes(n, project)]


def drain(url, cert, key, member="node1", query=f"project={P}", body=None):
    return curl(f"{url}/lxd-gateway/members/{member}/drain?{query}", cert, key, method="POST",
                data=body if body is not None else {})


def wait_op(url, cert, key, op_id, timeout=180):
    code, body = curl(f"{url}/1.0/operations/{op_id}/wait?timeout={timeout}", cert, key, timeout=timeout + 10)
    assert code == 200, body
    return body["metadata"]


def report(op):
    return {e["volume"]: e for e in op["metadata"]["report"]}


def make_project(name):
    member_lxc("node1", "project", "create", name, "-c", "features.storage.volumes=true", "-c", "features.images=false",
               "-c", "features.profiles=false", check=False)


def drop_project(name):
    if name not in member_lxc("node1", "project", "list", "--format", "csv").stdout:
        return
    out = member_lxc("node1", "list", "--project", name, "--format", "csv", "-c", "n", check=False).stdout.split()
    for c in out:
        member_lxc("node1", "delete", "-f", c, "--project", name, check=False)
    for n in NODES:
        for v in volumes(n, name):
            member_lxc(n, "storage", "volume", "delete", "pool1", v, "--target", n, "--project", name, check=False)
    member_lxc("node1", "project", "delete", name, check=False)


@pytest.fixture
def vols():
    """In project p-drain on node1: v-dr1 (data), v-dr2 (data and a snapshot), v-dr-used (attached to container
    c-dr, stopped). Returns their digests; the project and all in it are removed afterwards."""
    drop_project(P)
    make_project(P)
    data = {}
    for name in ("v-dr1", "v-dr2", "v-dr-used"):
        member_lxc("node1", "storage", "volume", "create", "pool1", name, "--target", "node1", "--project", P)
        data[name] = fill("node1", name, P)
    member_lxc("node1", "storage", "volume", "snapshot", "pool1", "v-dr2", "s0", "--target", "node1", "--project", P)
    member_lxc("node1", "init", "busybox", "c-dr", "--target", "node1", "--project", P)
    member_lxc("node1", "storage", "volume", "attach", "pool1", "v-dr-used", "c-dr", "/mnt", "--project", P)
    yield data
    drop_project(P)


def assert_drained(data, rep):
    for name in ("v-dr1", "v-dr2"):
        assert rep[name]["outcome"] == "moved", rep
        assert where(name) == [rep[name]["to"]] and rep[name]["to"] != "node1", (name, where(name), rep)
        assert tree_digest(volume_dir(rep[name]["to"], name, P)) == data[name]
    assert tree_digest(snapshot_dir(rep["v-dr2"]["to"], "v-dr2", "s0", P)) == data["v-dr2"]
    assert rep["v-dr-used"]["outcome"] == "skipped" and "in use" in rep["v-dr-used"]["reason"], rep
    assert where("v-dr-used") == ["node1"]
    assert tree_digest(volume_dir("node1", "v-dr-used", P)) == data["v-dr-used"]
    for n in NODES:  # no move's mark is left on any volume
        for name, (config, _) in volumes(n, P).items():
            assert "user.lxd-gateway.move" not in config, (n, name, config)


def test_drain_moves_what_is_free_and_reports_the_rest(gateway, env, vols):
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    code, body = drain(gateway.url, cert, key)
    assert code == 202 and body["type"] == "async", body
    op = body["metadata"]
    assert op["description"] == "Draining custom volumes" and op["may_cancel"] is True, op
    done = wait_op(gateway.url, cert, key, op["id"])
    assert done["status"] == "Success", done
    meta = done["metadata"]
    assert (meta["volumes_total"], meta["volumes_moved"], meta["volumes_skipped"], meta["volumes_failed"]) == ("3", "2", "1", "0")
    assert_drained(vols, report(done))
    # a second drain finds nothing left to move
    code, body = drain(gateway.url, cert, key)
    done = wait_op(gateway.url, cert, key, body["metadata"]["id"])
    assert done["status"] == "Success" and done["metadata"]["volumes_moved"] == "0", done


def test_a_volume_a_running_instance_uses_stays(gateway, env, vols):
    """v-dr-used attached to c-dr, now RUNNING: it stays, reported in use; the free ones move."""
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    member_lxc("node1", "start", "c-dr", "--project", P)
    try:
        code, body = drain(gateway.url, cert, key)
        assert code == 202, body
        done = wait_op(gateway.url, cert, key, body["metadata"]["id"])
        assert done["status"] == "Success", done
        assert_drained(vols, report(done))
        state = json.loads(member_lxc("node1", "query", f"/1.0/instances/c-dr/state?project={P}").stdout)
        assert state["status"] == "Running", state
    finally:
        member_lxc("node1", "stop", "-f", "c-dr", "--project", P, check=False)


def test_progress_names_each_running_move_and_never_more_than_parallel(gateway, env, vols):
    """While the drain runs, its metadata names each running move's own operation (a real one: its progress is the
    transfer's), its counters grow, and never more than `parallel` moves run at once (here 2 of 3)."""
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    member_lxc("node1", "storage", "volume", "create", "pool1", "v-dr3", "--target", "node1", "--project", P)
    for name in ("v-dr1", "v-dr2", "v-dr3"):
        vols[name] = fill("node1", name, P, size=128 * MiB)
    code, body = drain(gateway.url, cert, key, body={"parallel": 2})
    assert code == 202, body
    op_id, seen, move_ops = body["metadata"]["id"], [], {}
    deadline = time.time() + 180
    while True:
        assert time.time() < deadline, f"the drain still runs after 180 s: {seen[-3:]}"
        code, op = curl(f"{gateway.url}/1.0/operations/{op_id}", cert, key)
        assert code == 200, op
        if op["metadata"]["status"] != "Running":
            break
        meta = op["metadata"]["metadata"] or {}
        moving = meta.get("moving", [])
        seen.append((meta.get("volumes_moved"), sorted(m["volume"] for m in moving)))
        for m in moving:
            if m["operation"] not in move_ops:
                mcode, mop = curl(f"{gateway.url}{m['operation']}", cert, key)
                move_ops[m["operation"]] = (mcode, mop["metadata"]["description"] if mcode == 200 else mop)
        time.sleep(0.1)
    assert max(len(v) for _, v in seen) == 2, seen  # two at once, never three
    assert any(moved in ("1", "2") for moved, _ in seen), seen  # counted while it runs
    assert len(move_ops) == 3 and all(m == (200, "Moving storage volume") for m in move_ops.values()), move_ops
    done = wait_op(gateway.url, cert, key, op_id)
    assert done["status"] == "Success" and done["metadata"]["volumes_moved"] == "3", done
    assert done["metadata"]["moving"] == [], done
    for name in ("v-dr1", "v-dr2", "v-dr3"):
        assert len(where(name)) == 1 and where(name) != ["node1"], name
        assert tree_digest(volume_dir(where(name)[0], name, P)) == vols[name], name


def test_dry_run_plans_and_changes_nothing(gateway, env, lxc, vols):
    """Asked with `lxc query` (5.0.2), as the README shows: it waits for the operation and prints it."""
    out = lxc.run("query", "-X", "POST", "--wait", "-d", json.dumps({"dry_run": True}),
                  f"gw:/lxd-gateway/members/node1/drain?project={P}")
    done = json.loads(out.stdout)
    assert done["status"] == "Success", done
    rep = report(done)
    assert rep["v-dr1"]["reason"] == "dry run" and rep["v-dr1"]["to"] in ("node2", "node3"), rep
    assert all(where(n) == ["node1"] for n in ("v-dr1", "v-dr2", "v-dr-used"))


def test_members_called_offline_for_a_late_heartbeat_still_take_volumes(gateway, env, vols):
    """The targets are the members that answer, read when the drain starts: not skipped for the gateway's health view
    or LXD's heartbeat status of a moment ago (LXD itself forwards to a member it calls Offline)."""
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    mark = log_mark(gateway)
    late_heartbeats(gateway, ["node2", "node3"])
    code, body = drain(gateway.url, cert, key)
    assert code == 202, body
    done = wait_op(gateway.url, cert, key, body["metadata"]["id"])
    assert done["status"] == "Success", done
    assert_drained(vols, report(done))
    for n in ("node2", "node3"):  # (the next tests do not inherit members the gateway calls Offline)
        gateway.wait_log(f'msg="member status" member={n} status=Online', mark, timeout=40)


def test_an_evacuated_member_takes_nothing(gateway, env, vols):
    """The targets are read from the cluster when the drain starts: an evacuated member (the operator took it out of
    service) gets nothing, though the gateway's own health view calls it up; the others answer, whatever heartbeat
    status LXD gives them at that moment (a busy cluster calls members Offline for a round: the first CI failure)."""
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    member_lxc("node1", "cluster", "evacuate", "node3", "--force")
    try:
        code, body = drain(gateway.url, cert, key, body={"dry_run": True})
        assert code == 202, body
        rep = report(wait_op(gateway.url, cert, key, body["metadata"]["id"]))
        assert [rep[n].get("to") for n in ("v-dr1", "v-dr2")] == ["node2", "node2"], rep
    finally:
        member_lxc("node1", "cluster", "restore", "node3", "--force")


@pytest.mark.parametrize("case", ["parallel-0", "parallel-text", "pools-not-list", "not-json", "unknown-member", "untrusted",
                                  "project-and-all"])
def test_bad_requests_are_refused_in_lxds_envelope(gateway, env, case):
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    member, query, body, want = "node1", f"project={P}", {}, None
    if case == "parallel-0":
        body, want = {"parallel": 0}, (400, '"parallel" must be a number from 1 to 8')
    elif case == "parallel-text":
        body, want = {"parallel": "2"}, (400, '"parallel" must be a number from 1 to 8')
    elif case == "pools-not-list":
        body, want = {"pools": "pool1"}, (400, '"pools" must be a list of pool names')
    elif case == "not-json":
        body, want = "{", (400, "The request body must be a JSON object")
    elif case == "unknown-member":
        member, want = "node9", (404, 'Cluster member not found: "node9"')
    elif case == "untrusted":
        cert, key, want = env["LXDGW_UNTRUSTED_CERT"], env["LXDGW_UNTRUSTED_KEY"], (403, "Forbidden")
    elif case == "project-and-all":
        query, want = f"project={P}&all-projects=true", (400, "Cannot specify a project when requesting all projects")
    code, answer = drain(gateway.url, cert, key, member, query, body)
    assert code == want[0] and answer["type"] == "error" and answer["error_code"] == want[0], answer
    assert want[1] in answer["error"], answer


def test_restricted_caller_drains_only_what_lxd_lets_it_touch(gateway, vols, tmp_path):
    """A certificate restricted to p-drain2: draining p-drain (or all projects) is refused as LXD refuses that
    certificate the list directly, nothing moves; draining p-drain2 moves its volume."""
    from test_identity import fingerprint, new_cert
    drop_project("p-drain2")
    make_project("p-drain2")
    crt, key = new_cert(tmp_path, "restricted-drain")
    member_lxc("node1", "config", "trust", "add", crt, "--restricted", "--projects", "p-drain2")
    try:
        gateway.wait_trusted(crt, key)
        member_lxc("node1", "storage", "volume", "create", "pool1", "v-dr-r", "--target", "node1", "--project", "p-drain2")
        digest = fill("node1", "v-dr-r", "p-drain2")
        code, body = drain(gateway.url, crt, key)
        direct = curl(f"https://127.0.0.11:8443/1.0/storage-pools/pool1/volumes?project={P}", crt, key)
        assert (code, body["error"]) == (direct[0], direct[1]["error"]) == (403, "not authorized"), (body, direct)
        code, body = drain(gateway.url, crt, key, query="all-projects=true")
        direct = curl("https://127.0.0.11:8443/1.0/storage-pools/pool1/volumes?all-projects=true", crt, key)
        assert (code, body["error"]) == (direct[0], direct[1]["error"]) == (403, "not authorized"), (body, direct)
        assert all(where(n) == ["node1"] for n in ("v-dr1", "v-dr2", "v-dr-used"))
        code, body = drain(gateway.url, crt, key, query="project=p-drain2")
        done = wait_op(gateway.url, crt, key, body["metadata"]["id"])
        assert done["status"] == "Success", done
        to = report(done)["v-dr-r"]["to"]
        assert where("v-dr-r", "p-drain2") == [to] and tree_digest(volume_dir(to, "v-dr-r", "p-drain2")) == digest
    finally:
        member_lxc("node1", "config", "trust", "remove", fingerprint(crt)[:12], check=False)
        drop_project("p-drain2")


def test_cancel_stops_the_drain_and_loses_nothing(gateway, env, vols):
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    fill("node1", "v-dr1", P, size=256 * MiB)
    vols["v-dr1"] = tree_digest(volume_dir("node1", "v-dr1", P))
    mark = log_mark(gateway)
    code, body = drain(gateway.url, cert, key, body={"parallel": 1})
    assert code == 202, body
    gateway.wait_log('msg="drain: moving"', mark)
    code, answer = curl(f"{gateway.url}/1.0/operations/{body['metadata']['id']}", cert, key, method="DELETE")
    assert code == 200, answer
    done = wait_op(gateway.url, cert, key, body["metadata"]["id"])
    assert done["status"] == "Cancelled", done
    for name in ("v-dr1", "v-dr2", "v-dr-used"):  # each exactly once, whole
        assert len(where(name)) == 1, (name, [volumes(n, P) for n in NODES])
        assert tree_digest(volume_dir(where(name)[0], name, P)) == vols[name]


# ---- a crash at each journaled step of a drain ----

@pytest.fixture(scope="module")
def crashgw(tmp_path_factory):
    yield from crash_gateway(tmp_path_factory, "127.0.0.1:8488", "drain-crash-gateway")


@pytest.fixture
def crashable(crashgw):
    yield crashgw
    after_crash_test(crashgw)


def drain_killed_at(gw, env, step, cert, key, body=None):
    """`gw` started frozen by the test hook right after it records `step`; a drain of node1 asked of it with `cert`;
    `gw` SIGKILLed once frozen. The drain's 202 body."""
    mark = log_mark(gw)
    start_ready(gw, env, {"LXDGW_TEST_PAUSE_AT": step})
    gw.wait_trusted(cert, key)
    code, answer = drain(gw.url, cert, key, body=body)
    assert code == 202, answer
    gw.wait_log(f'msg="paused for a test" step={step}', mark)
    gw.kill()
    return answer


@pytest.mark.parametrize("step", ["drain-planned", "begin", "transferring", "transferred"])
def test_crash_mid_drain_loses_nothing_and_the_drain_resumes(crashable, env, vols, step):
    """Killed right after `step` was recorded (the drain's plan, or a step of its first move): the restart finishes or
    rolls back that move, and RESUMES the drain under its own operation id, as its caller, once that move has ended
    (the volume it was moving is not planned twice): the drain ends Success with every free volume off node1; every
    volume exists exactly once, whole; a new drain finds nothing left."""
    gw, cert, key = crashable, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    body = drain_killed_at(gw, env, step, cert, key, {"parallel": 1})
    mark = log_mark(gw)
    gw.start()
    gw.wait_log("resuming an interrupted drain", mark)
    if step != "drain-planned":
        gw.wait_log("found an interrupted move", mark)
    gw.wait_trusted(cert, key)
    done = wait_op(gw.url, cert, key, body["metadata"]["id"])
    assert done["status"] == "Success", done
    rep = report(done)  # (a volume its recovered move put on another member is no longer on node1: not in it)
    assert_drained(vols, {n: rep.get(n, {"outcome": "moved", "to": where(n)[0]}) for n in ("v-dr1", "v-dr2", "v-dr-used")})
    assert "cannot resume" not in gw.logtext()[mark:]
    code, body = drain(gw.url, cert, key)
    assert code == 202, body
    again = wait_op(gw.url, cert, key, body["metadata"]["id"])
    assert again["status"] == "Success" and again["metadata"]["volumes_moved"] == "0", again


@pytest.mark.parametrize("later", ["still trusted", "restricted elsewhere", "no longer trusted"])
def test_a_resumed_drain_runs_as_its_caller(crashable, env, vols, tmp_path, later):
    """A certificate restricted to p-drain, its drain interrupted after its plan: resumed as that certificate (its
    shadow: LXD still applies its restriction), it drains p-drain; restricted to another project meanwhile, or removed
    from the trust store, it is not resumed (as a new drain of p-drain by it would be refused): its drain ends as
    interrupted, nothing moves (the gateway's own identity would have moved them)."""
    from test_identity import fingerprint, new_cert
    gw, admin_cert, admin_key = crashable, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    crt, key = new_cert(tmp_path, "restricted-resume")
    member_lxc("node1", "config", "trust", "add", crt, "--restricted", "--projects", P)
    try:
        body = drain_killed_at(gw, env, "drain-planned", crt, key)
        if later == "no longer trusted":
            member_lxc("node1", "config", "trust", "remove", fingerprint(crt)[:12])
        if later == "restricted elsewhere":
            member_lxc("node1", "query", "-X", "PATCH", "-d", json.dumps({"projects": ["default"]}),
                       f"/1.0/certificates/{fingerprint(crt)}")
        mark = log_mark(gw)
        gw.start()
        gw.wait_log("resuming an interrupted drain" if later == "still trusted" else "cannot resume", mark)
        gw.wait_trusted(admin_cert, admin_key)
        done = wait_op(gw.url, admin_cert, admin_key, body["metadata"]["id"])
        if later == "still trusted":
            assert done["status"] == "Success", done
            assert_drained(vols, report(done))
        else:
            why = "no longer trusted" if later == "no longer trusted" else "restricted to other projects now"
            assert done["status"] == "Failure" and f"cannot resume (its caller is {why})" in done["err"], done
            assert all(where(n) == ["node1"] for n in ("v-dr1", "v-dr2", "v-dr-used"))
    finally:
        member_lxc("node1", "config", "trust", "remove", fingerprint(crt)[:12], check=False)


def test_sigterm_ends_the_drain_with_what_it_moved(crashable, env, vols):
    """SIGTERM while the drain's first move runs: no other starts, that one ends (moved, or rolled back: the listener
    its target would pull through is closed), and the drain ends with its report ("run the drain again") rather than
    being cut short at exit; the gateway exits 0; the next start finds no interrupted drain, and a new drain moves the
    rest."""
    gw, cert, key = crashable, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    for name in ("v-dr1", "v-dr2"):  # (so that the first move still runs at the signal)
        vols[name] = fill("node1", name, P, size=192 * MiB)
    start_ready(gw, env)
    mark = log_mark(gw)
    code, body = drain(gw.url, cert, key, body={"parallel": 1})
    assert code == 202, body
    gw.wait_log("drain: moving", mark)
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(90) == 0, gw.logtext()[mark:][-3000:]
    assert_no_flow_left(timeout=0)  # the flows' records and locks were deleted before the exit, not left to recover
    log = gw.logtext()[mark:]
    assert log.count("drain: moving") == 1 and "msg=drained" in log, log[-3000:]
    moved = [n for n in ("v-dr1", "v-dr2") if where(n) != ["node1"]]
    assert len(moved) <= 1, {n: where(n) for n in ("v-dr1", "v-dr2")}
    assert f"The gateway was stopped; {2 - len(moved)} volumes were not moved: run the drain again" in log, log[-3000:]
    for name in ("v-dr1", "v-dr2", "v-dr-used"):
        assert len(where(name)) == 1 and tree_digest(volume_dir(where(name)[0], name, P)) == vols[name], name
    mark = log_mark(gw)
    start_ready(gw, env)
    code, body = drain(gw.url, cert, key)
    assert code == 202, body
    done = wait_op(gw.url, cert, key, body["metadata"]["id"])
    assert done["status"] == "Success" and done["metadata"]["volumes_moved"] == str(2 - len(moved)), done
    assert "interrupted" not in gw.logtext()[mark:]
    assert all(where(n) != ["node1"] for n in ("v-dr1", "v-dr2"))


# ---- targets by free space ----

def pool_volumes(node, project, pool):
    out = member_lxc(node, "query", f"/1.0/storage-pools/{pool}/volumes/custom?recursion=1&project={project}&target={node}").stdout
    return [v["name"] for v in json.loads(out) if v["location"] == node]


def in_member_mounts(node, *args, check=True):
    """A command in member `node`'s own mount namespace: each daemon runs in a private one (tests/cluster/cluster.sh),
    where a mount the test makes in its own would not show."""
    with open(f"{CLUSTER_DIR}/{node}/lxd.pid") as f:
        pid = f.read().strip()
    return sh(["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", *args], check=check)


@pytest.fixture
def small_pool():
    """pool-dr, a dir pool whose source on node2 is a 96 MiB tmpfs and on node3 a 160 MiB one (node1: a directory),
    each mounted where only that member sees it: members with different free space. Removed afterwards, the tmpfs
    unmounted."""
    base = f"{CLUSTER_DIR}/pool-dr"
    sizes = {"node2": "96m", "node3": "160m"}
    for n in NODES:
        os.makedirs(f"{base}/{n}", exist_ok=True)
        if n in sizes:
            in_member_mounts(n, "mount", "-t", "tmpfs", "-o", f"size={sizes[n]}", "tmpfs", f"{base}/{n}")
    try:
        for n in NODES:
            member_lxc("node1", "storage", "create", "pool-dr", "dir", f"source={base}/{n}", "--target", n)
        member_lxc("node1", "storage", "create", "pool-dr", "dir")
        yield "pool-dr"
    finally:
        for n in NODES:
            for v in pool_volumes(n, P, "pool-dr"):
                member_lxc(n, "storage", "volume", "delete", "pool-dr", v, "--target", n, "--project", P, check=False)
        member_lxc("node1", "storage", "delete", "pool-dr", check=False)
        for n in sizes:
            in_member_mounts(n, "umount", "-l", f"{base}/{n}", check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_targets_follow_free_space(gateway, env, vols, small_pool):
    """Three 40 MiB block volumes off node1; node3 has 160 MiB free, node2 96 MiB: the first two go to node3
    (160, then 120 left in the plan), the third to node2 (96 > 80): what the drain sends counts, as its sizes."""
    for name in ("v-fs1", "v-fs2", "v-fs3"):
        member_lxc("node1", "storage", "volume", "create", "pool-dr", name, "--type=block", "size=40MiB", "--target", "node1",
                   "--project", P)
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    code, body = drain(gateway.url, cert, key, body={"pools": ["pool-dr"], "parallel": 1})
    assert code == 202, body
    done = wait_op(gateway.url, cert, key, body["metadata"]["id"])
    assert done["status"] == "Success", done
    rep = report(done)
    assert set(rep) == {"v-fs1", "v-fs2", "v-fs3"}, rep  # (pool1's volumes are not in this drain)
    assert sorted(e["to"] for e in rep.values()) == ["node2", "node3", "node3"], rep
    for name, e in rep.items():
        assert [n for n in NODES if name in pool_volumes(n, P, "pool-dr")] == [e["to"]]


def test_a_member_with_a_volume_of_that_name_is_passed_over(gateway, env, vols):
    """v-dr1 also exists on node2, v-dr2 on node2 and node3 (same pool and project): v-dr1 goes to node3 whichever the
    plan picked first; v-dr2 has nowhere to go: it fails, naming both, and stays. The other copies are left alone."""
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    theirs = {}
    for name, nodes in (("v-dr1", ["node2"]), ("v-dr2", ["node2", "node3"])):
        for n in nodes:
            member_lxc("node1", "storage", "volume", "create", "pool1", name, "--target", n, "--project", P)
            theirs[name, n] = fill(n, name, P, size=64 * 1024)
    code, body = drain(gateway.url, cert, key)
    assert code == 202, body
    done = wait_op(gateway.url, cert, key, body["metadata"]["id"])
    rep = report(done)
    assert done["status"] == "Failure" and done["err"] == "1 of 3 volumes could not be moved: see the report", done
    assert (rep["v-dr1"]["outcome"], rep["v-dr1"].get("to")) == ("moved", "node3"), rep
    assert sorted(where("v-dr1")) == ["node2", "node3"]
    assert tree_digest(volume_dir("node3", "v-dr1", P)) == vols["v-dr1"]
    assert rep["v-dr2"]["outcome"] == "failed" and "to" not in rep["v-dr2"], rep
    reason = rep["v-dr2"]["reason"]
    assert reason.startswith("a volume of its name exists on [") and "node2" in reason and "node3" in reason, reason
    assert sorted(where("v-dr2")) == list(NODES)
    assert tree_digest(volume_dir("node1", "v-dr2", P)) == vols["v-dr2"]
    for (name, n), digest in theirs.items():
        assert tree_digest(volume_dir(n, name, P)) == digest, (name, n)


# ---- one flow per volume, one drain per member ----

def test_a_second_drain_of_the_member_is_refused_while_one_runs(gateway, env, vols):
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    fill("node1", "v-dr1", P, size=256 * MiB)  # (so that the first is still running)
    code, first = drain(gateway.url, cert, key, body={"parallel": 1})
    assert code == 202, first
    code, second = drain(gateway.url, cert, key)
    assert code == 409 and second["type"] == "error", second
    assert second["error"] == f"A drain of node1 is running (operation {first['metadata']['id']})", second
    assert wait_op(gateway.url, cert, key, first["metadata"]["id"])["status"] == "Success"


def test_two_moves_of_one_volume_at_once_move_it_once(gateway, env, vols):
    """Two single-call moves of the same volume asked at the same moment (to node2 and to node3), three times: one
    moves it, the other is refused or rolled back without touching it; the volume exists exactly once, whole (the
    source is marked only if it is as it was read: If-Match; another live flow's mark stops a move)."""
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    at = "node1"
    for _ in range(3):
        results = {}

        def move(to):
            results[to] = curl(f"{gateway.url}/1.0/storage-pools/pool1/volumes/custom/v-dr1?target={to}&project={P}", cert, key,
                               method="POST", data={"name": "v-dr1", "migration": True, "source": {"location": at}})
        others = [n for n in NODES if n != at]
        threads = [threading.Thread(target=move, args=(n,)) for n in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        outcomes = {}
        for to, (code, body) in results.items():
            outcomes[to] = wait_op(gateway.url, cert, key, body["metadata"]["id"])["status"] if code == 202 else code
        assert sorted(str(o) for o in outcomes.values()) != ["Success", "Success"], outcomes
        assert len(where("v-dr1")) == 1, (outcomes, where("v-dr1"))
        at = where("v-dr1")[0]
        assert tree_digest(volume_dir(at, "v-dr1", P)) == vols["v-dr1"], outcomes
        assert "user.lxd-gateway.move" not in volumes(at, P)["v-dr1"][0]
