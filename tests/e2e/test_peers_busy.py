"""Issue 12 item 2: a busy peer is not a dead peer.

A replica that is alive but does not answer for a while (SIGSTOP here: its port still accepts TCP connections, its
TLS handshakes time out, its probes go unanswered, exactly what a loaded machine shows as "SSL connection timeout")
must not be declared down: a client waiting on the other replica for its move gets the move's real outcome, and
listeners never see it fail with a "down" error. A dead one (SIGKILL: its port refuses) is test_replicas.py's."""
import concurrent.futures
import json
import os
import signal
import time

from helpers import MiB, curl, sh, tree_digest, volume_dir
from test_copy import volumes
from test_replicas import (NODES, Monitor, cleanup, deployment, post_move_via, run_incus)  # noqa: F401 (fixtures)

STOPPED_S = 20  # past the probe and connect timeouts (5 s) and the old three-miss rule (~15 s); under the 60 s silence


def test_a_stopped_replica_is_slow_not_down(deployment, env, incus, cleanup):  # noqa: F811 (fixtures)
    owner, other = deployment.replicas["gw-a"], deployment.replicas["gw-b"]
    name = "r-busy"
    incus("storage", "volume", "create", "gw:pool1", name, "--target", "node1")
    src = volume_dir("node1", name)
    sh(["sh", "-c", f"head -c {64 * MiB} /dev/urandom > {src}/data.bin"])
    digest = tree_digest(src)
    mon = Monitor(incus.conf, "gw-b")
    time.sleep(1)
    since = len(other.logtext())
    op_id = post_move_via(incus, "gw-a", name, "node3")
    assert deployment.owner(op_id) == "gw-a"
    os.kill(owner.proc.pid, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        time.sleep(1)
        cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
        # a wait forwarded while the owner cannot even finish a TLS handshake, and a plain GET
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        wait = pool.submit(run_incus, incus, "query", f"gw-b:/1.0/operations/{op_id}/wait?timeout=240", timeout=300)
        get = pool.submit(curl, f"{other.url}/1.0/operations/{op_id}", cert, key, timeout=90)
        time.sleep(STOPPED_S - (time.time() - stopped_at))
    finally:
        os.kill(owner.proc.pid, signal.SIGCONT)
    code, body = get.result()
    assert code == 200 and body["metadata"]["id"] == op_id, \
        f"GET of the stopped owner's operation through the other replica: {code} {body}"
    r = wait.result()
    assert r.returncode == 0, f"the wait forwarded to a stopped (not dead) owner failed: {r.stderr}"
    op = json.loads(r.stdout)
    print(f"owner stopped {STOPPED_S} s; the move ended {op['status']} ({op.get('err')!r})")
    assert op["status"] in ("Success", "Failure") and "is down" not in op["err"], op
    log = other.logtext()[since:]
    assert "gateway replica down" not in log, log[-3000:]
    assert "gateway replica slow" in log, "the other replica never noticed the owner was slow: the test proved nothing"
    deadline = time.time() + 30
    while time.time() < deadline and "Success" not in mon.statuses(op_id) and "Failure" not in mon.statuses(op_id):
        time.sleep(0.5)
    mon.stop()
    statuses = mon.statuses(op_id)
    failed = [e["metadata"]["err"] for e in mon.events if e["metadata"].get("id") == op_id and e["metadata"]["status"] == "Failure"]
    assert not any("is down" in err for err in failed), failed
    assert statuses and statuses[-1] == op["status"], (statuses, op["status"])
    on = {node: volumes(node) for node in NODES}
    holders = [node for node in NODES if name in on[node]]
    assert len(holders) == 1, (name, holders)
    assert tree_digest(volume_dir(holders[0], name)) == digest
