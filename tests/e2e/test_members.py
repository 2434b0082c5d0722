"""Members: a member that refuses connections is skipped before anything is sent, and comes back after recovery.
Runs after the foundation tests (it crashes node1 and restarts it)."""
import os
import re
import time

from helpers import Gateway, curl, sh

CLUSTER = os.path.join(os.environ["LXDGW_TOP"], "tests/cluster/cluster.sh")


def last_access_line(gateway, path, timeout=5):
    """The last access-log line of `path`. h2o logs a request when it is disposed, which may be just after the client
    has read the answer: wait a little for the line instead of racing it."""
    deadline = time.time() + timeout
    while True:
        lines = [l for l in gateway.logtext().splitlines() if f"path={path} " in l and " status=" in l]
        if lines or time.time() > deadline:
            return lines[-1] if lines else ""
        time.sleep(0.05)


def wait_cluster_healthy():
    """All members Online as every member sees it, and forwarding among them prompt (cluster.sh settle)."""
    sh(["bash", CLUSTER, "settle"], timeout=120)


def test_member_refusing_connections_is_skipped(gateway):
    """With probes effectively off (1 h), only the connect-time failover can skip the crashed member."""
    with open(gateway.config) as f:
        conf = f.read().replace("listen: [\"127.0.0.1:8443\"]", "listen: [\"127.0.0.1:8444\"]")
    conf = conf.replace("cluster:\n", "cluster:\n  health_interval: 1h\n")
    conf = conf.replace("listen: 127.0.0.1:9443", "listen: 127.0.0.1:9444")  # the session gateway's metrics address
    path = os.path.join(gateway.state, "no-probes.yaml")
    with open(path, "w") as f:
        f.write(conf)
    gw = Gateway(gateway.binary, gateway.state, "127.0.0.1:8444", config=path, name="no-probes")
    gw.start()
    try:
        for _ in range(3):  # pooled connections to node1 now exist
            assert curl(gw.url + "/1.0")[0] == 200
        assert "member=node1" in last_access_line(gw, "/1.0")
        sh(["bash", CLUSTER, "kill", "node1"])
        try:
            # the very first request after the crash must succeed, on another member: no 502/503 to the client
            code, body = curl(gw.url + "/1.0?after-crash")
            assert code == 200, body
            assert body["metadata"]["auth"] == "untrusted"
            line = last_access_line(gw, "/1.0?after-crash")
            assert re.search(r"member=node[23]\b", line), line
            assert 'msg="member unreachable" member=node1' in gw.logtext()
        finally:
            sh(["bash", CLUSTER, "start", "node1"])
            wait_cluster_healthy()
    finally:
        gw.stop()
        gw.check_sanitizers()


def test_recovered_member_is_used_again(gateway):
    """After a crash and restart, the member answers its probe (every 2 s) and takes requests again."""
    down_msg = 'msg="member unreachable" member=node1'
    seen = gateway.logtext().count(down_msg)
    sh(["bash", CLUSTER, "kill", "node1"])
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            curl(gateway.url + "/1.0?while-down")
            if gateway.logtext().count(down_msg) > seen:
                break
            time.sleep(0.3)
        assert re.search(r"member=node[23]\b", last_access_line(gateway, "/1.0?while-down"))
    finally:
        sh(["bash", CLUSTER, "start", "node1"])
        wait_cluster_healthy()
    # LXD itself may call the restarted member Offline for another heartbeat round (seen: 10 s after it answers
    # again); the gateway follows the cluster's view, so allow for that
    deadline = time.time() + 40
    while time.time() < deadline:
        curl(gateway.url + "/1.0?after-recovery")
        if "member=node1" in last_access_line(gateway, "/1.0?after-recovery"):
            break
        time.sleep(0.5)
    assert "member=node1" in last_access_line(gateway, "/1.0?after-recovery")


def stream_member(gateway):
    """The member the gateway's event stream is on now (from its last 'event stream up' line)."""
    ups = re.findall(r'msg="event stream up" member=(\S+)', gateway.logtext())
    assert ups, "the event stream never came up"
    return {"https://127.0.0.11:8443": "node1", "https://127.0.0.12:8443": "node2",
            "https://127.0.0.13:8443": "node3"}.get(ups[-1], ups[-1])


def test_event_stream_moves_to_another_member(gateway, tmp_path):
    """The trust-event subscription is re-established elsewhere when its member dies; revocations still land in 2 s."""
    from test_identity import fingerprint, new_cert
    victim = stream_member(gateway)
    other = "node2" if victim != "node2" else "node3"
    ups = gateway.logtext().count('msg="event stream up"')
    sh(["bash", CLUSTER, "kill", victim])
    try:
        deadline = time.time() + 15
        while time.time() < deadline and gateway.logtext().count('msg="event stream up"') <= ups:
            time.sleep(0.3)
        assert gateway.logtext().count('msg="event stream up"') > ups, gateway.logtext()[-2000:]
        assert stream_member(gateway) != victim
        crt, key = new_cert(tmp_path, "moved-stream")
        member = ["env", f"LXD_DIR={os.environ['LXDGW_CLUSTER_DIR']}/{other}", "lxc"]
        sh(member + ["config", "trust", "add", crt])
        gateway.wait_trusted(crt, key)
        sh(member + ["config", "trust", "remove", fingerprint(crt)[:12]])
        time.sleep(2)
        assert curl(gateway.url + "/1.0", crt, key)[1]["metadata"]["auth"] == "untrusted"
    finally:
        sh(["bash", CLUSTER, "start", victim])
        wait_cluster_healthy()


def test_copy_to_an_offline_member_is_refused(gateway, env):
    """The single-call copy checks both members before touching either: a dead target gets a clear 503, and the
    source is left as it was (no migration source started on it)."""
    sh(["bash", CLUSTER, "lxc", "node1", "storage", "volume", "create", "pool1", "v-off", "--target", "node1"])
    body = {"name": "v-off2", "type": "custom", "source": {"type": "copy", "name": "v-off", "pool": "pool1", "location": "node1"}}
    url = gateway.url + "/1.0/storage-pools/pool1/volumes/custom?target=node3"
    sh(["bash", CLUSTER, "kill", "node3"])
    try:
        deadline, code = time.time() + 15, 0
        while time.time() < deadline:  # the gateway learns it at the next probe (every 2 s) or refused connection
            code, answer = curl(url, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"], "POST", body)
            if code == 503:
                break
            time.sleep(0.5)
        assert code == 503 and answer["error"] == 'Cluster member "node3" (target) is offline', answer
        ops = sh(["bash", CLUSTER, "lxc", "node1", "query", "/1.0/operations?recursion=1&target=node1"]).stdout
        assert "Migrating storage volume" not in ops
        vols = sh(["bash", CLUSTER, "lxc", "node1", "storage", "volume", "list", "pool1", "--format", "csv"]).stdout
        assert "v-off2" not in vols
    finally:
        sh(["bash", CLUSTER, "start", "node3"])
        wait_cluster_healthy()
        sh(["bash", CLUSTER, "lxc", "node1", "storage", "volume", "delete", "pool1", "v-off", "--target", "node1"], check=False)
