"""Issue 12 item 2: no client waits forever for the end of an operation.

LXD 5.0.2 answers the websocket upgrade of /1.0/events BEFORE it registers the listener (lxd/events.go: upgrade, a
cluster database transaction, then AddListener, whose first act is a "keepalive" ping). A client that reads an
operation right after its 101 (lxc's "manual refresh" in operation.WaitContext) and sees it Running must then hear
of its end on that stream. The gateway answers the client's upgrade only after the member's first frame.

The test makes the window as wide as it can: it holds one operation on each member (a certificate-add token, Running
until it is used or cancelled; cancelling it takes no database call), opens an event stream through the gateway and, the instant its 101 arrives, cancels the three operations
directly on their members over connections opened beforehand. Every cancellation must reach the stream."""
import base64
import http.client
import json
import os
import socket
import ssl
import struct
import subprocess
import time

import pytest

from test_move_safety import new_gateway, retire

MEMBERS = {"node1": "127.0.0.11", "node2": "127.0.0.12", "node3": "127.0.0.13"}
ROUNDS = int(os.environ.get("LXDGW_EVENT_RACE_ROUNDS", "15"))


def tls_context(env):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    return ctx


def member_conn(env, node):
    c = http.client.HTTPSConnection(MEMBERS[node], 8443, context=tls_context(env), timeout=30)
    c.connect()
    return c


def call(conn, method, path, body=None, what=""):
    conn.request(method, path, body=None if body is None else json.dumps(body))
    r = conn.getresponse()
    data = r.read()
    try:
        return r.status, json.loads(data)
    except ValueError:
        raise AssertionError(f"{what}: {method} {path} answered {r.status} without JSON: {data[:300]!r}") from None


class EventStream:
    """A raw websocket client of GET /1.0/events (HTTP/1.1), each read bounded."""

    def __init__(self, env, addr, query="type=operation"):
        host, port = addr.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=20)
        self.sock = tls_context(env).wrap_socket(raw, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /1.0/events?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"the gateway closed the event stream before answering: {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), f"event stream upgrade refused: {head!r}"

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            assert chunk, "the gateway closed the event stream"
            self.buf += chunk
        return True

    def next_event(self, deadline):
        """the next text message as JSON, or None at the deadline"""
        while time.time() < deadline:
            if not self._need(2, deadline):
                return None
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if not self._need(4, deadline):
                    return None
                n, off = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                if not self._need(10, deadline):
                    return None
                n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
            if not self._need(off + n, deadline):
                return None
            payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
            if b0 & 0x0F == 1:
                return json.loads(payload)
        return None

    def close(self):
        self.sock.close()


def cancel_right_after_upgrade(env, addr, rounds):
    """`rounds` times: a token operation held on each member, an event stream opened through the gateway at `addr`,
    and the three operations cancelled the instant its 101 arrives. Returns (the ends that never reached the stream,
    the longest the 101 took in s)."""
    missed, slowest = [], 0.0
    for rnd in range(rounds):
        conns = {node: member_conn(env, node) for node in MEMBERS}
        ops = {}
        for node in MEMBERS:  # a token: Running on the member that made it until it is used or cancelled
            status, j = call(conns[node], "POST", "/1.0/certificates", {"name": f"ev-race-{rnd}", "type": "client",
                                                                          "token": True}, what="token")
            assert status == 202 and j.get("type") == "async", j
            ops[node] = j["metadata"]["id"]
        asked = time.time()
        stream = EventStream(env, addr)
        slowest = max(slowest, time.time() - asked)
        for node, op in ops.items():  # the instant the 101 is read: over connections already open
            conns[node].request("DELETE", f"/1.0/operations/{op}")
        for node in ops:
            r = conns[node].getresponse()
            r.read()
            assert r.status == 200, f"round {rnd}: DELETE of the token operation on {node} answered {r.status}"
        ended, deadline = set(), time.time() + 15
        while len(ended) < len(ops):
            ev = stream.next_event(deadline)
            if ev is None:
                break
            md = ev.get("metadata") or {}
            if md.get("id") in ops.values() and md.get("status") in ("Cancelled", "Failure", "Success"):
                ended.add(md["id"])
        stream.close()
        for c in conns.values():
            c.close()
        lost = [f"{node}:{op}" for node, op in ops.items() if op not in ended]
        if lost:
            missed.append((rnd, lost))
    return missed, slowest


def test_an_operation_ending_right_after_the_upgrade_reaches_the_stream(gateway, env):
    missed, _ = cancel_right_after_upgrade(env, gateway.addr, ROUNDS)
    assert not missed, f"operation ends never reached a client's event stream opened right before them: {missed}"


def test_a_member_slow_to_register_neither_fails_the_upgrade_nor_loses_an_end(tmp_path, env):
    """A loaded LXD 5.0.2 member registers a stream's listener seconds after its 101 (seen: 7.8 s). lxc and incus give
    the whole upgrade 5 s (a CI run: lxc's early listener failed, it read its operation too late and got "Operation not
    found"). A gateway whose members register 4 s late (the test hook drops their frames until then) still answers
    the upgrade well within 5 s, and the ends of operations that fall into the gap (on every member, the stream's own
    included) reach the stream from the members' own streams."""
    state = str(tmp_path / "state")
    os.makedirs(state)
    gw, fp = new_gateway(state, "127.0.0.1:8497", "deaf-gw")
    try:
        gw.start({"LXDGW_TEST_EVENTS_DEAF_MS": "4000"})
        time.sleep(3)  # its own streams of the members: up
        missed, slowest = cancel_right_after_upgrade(env, gw.addr, 3)
        assert slowest < 4.0, f"the event stream's upgrade took {slowest:.1f} s: lxc and incus give up at 5 s"
        assert not missed, f"operation ends in the gap before the member registered the stream were lost: {missed}"
        gw.stop()
        gw.check_sanitizers()
    finally:
        retire(gw, fp)


def member_pid(node):
    """The pid of member `node`'s LXD daemon."""
    tag = os.path.join(os.environ["LXDGW_CLUSTER_DIR"], node) + "/"
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"lxd") and any(a.decode(errors="replace").startswith(tag) for a in argv):
                return int(pid)
    raise AssertionError(f"no LXD daemon found for {node}")


def cut_links(src_node, dst_node):
    """Aborts every TCP connection member `src_node` holds to `dst_node` (its pull of `dst_node`'s events among them;
    LXD makes it again at its next heartbeat, up to 10 s later). Returns how many were cut."""
    pid, dst = member_pid(src_node), MEMBERS[dst_node]
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", f"{dst}:8443"], capture_output=True, text=True,
                         timeout=30).stdout
    ports = [line.split()[2].rsplit(":", 1)[1] for line in out.splitlines() if f"pid={pid}," in line]
    for port in ports:
        subprocess.run(["ss", "-K", "dst", f"{dst}:8443", "sport", "=", f":{port}"], capture_output=True, timeout=30,
                       check=True)
    return len(ports)


def test_an_operation_end_the_cluster_relay_lost_still_reaches_the_stream(gateway, env):
    """LXD members relay each other's events through links that drop (seen: node3 lost node2's for ~10 s and with it
    the ends of 22 operations). A client's stream comes from node1; node1's links to node2 are cut, and an operation
    of node2 ends at once: the gateway, which follows node2's own stream, must still deliver its end."""
    stream = EventStream(env, gateway.addr)
    try:
        time.sleep(1)
        conn = member_conn(env, "node2")
        status, j = call(conn, "POST", "/1.0/certificates", {"name": "ev-hub", "type": "client", "token": True}, what="token")
        assert status == 202, j
        op = j["metadata"]["id"]
        assert cut_links("node1", "node2") > 0, "node1 holds no connection to node2: nothing was cut"
        conn.request("DELETE", f"/1.0/operations/{op}")
        r2 = conn.getresponse()
        r2.read()
        assert r2.status == 200, r2.status
        conn.close()
        deadline, seen = time.time() + 20, []
        while time.time() < deadline:
            ev = stream.next_event(deadline)
            if ev is None:
                break
            md = ev.get("metadata") or {}
            if md.get("id") == op:
                seen.append(md.get("status"))
                if md.get("status") == "Cancelled":
                    break
        assert "Cancelled" in seen, f"the end of {op} (node2) never reached a stream from node1: {seen}"
    finally:
        stream.close()


def test_a_task_operation_lxd_forgot_is_still_read_through_the_gateway(gateway, env):
    """LXD forgets an operation 5 s after it ends ("Operation not found"); a client whose listener came late (CI: lxc's
    early listener timed out on a loaded machine, then `lxc launch` failed with "Operation not found") reads it after
    that. Through the gateway, a task operation that ended is read for a minute after, as its member's stream showed it."""
    host, port = gateway.addr.rsplit(":", 1)
    gw = http.client.HTTPSConnection(host, int(port), context=tls_context(env), timeout=30)
    node2 = member_conn(env, "node2")
    vol = "v-ev-forgot"
    time.sleep(3)  # the gateway's own streams of the members are up (it may have just started)
    try:
        status, j = call(gw, "POST", "/1.0/storage-pools/pool1/volumes/custom?target=node2", {"name": vol}, what="create")
        assert status in (200, 201), j
        status, j = call(gw, "POST", f"/1.0/storage-pools/pool1/volumes/custom/{vol}/snapshots?target=node2", {"name": "s0"},
                         what="snapshot")
        assert status == 202 and j["metadata"]["class"] == "task", j
        op = j["metadata"]["id"]
        # set-up: waited on where it runs. (Waited on through the gateway, one CI run got LXD's "Operation not found"
        # for this wait, from whichever member the gateway passed it to; not reproduced in 14 runs since.)
        status, j = call(node2, "GET", f"/1.0/operations/{op}/wait?timeout=30", what="wait")
        assert status == 200 and j["metadata"]["status"] == "Success", j
        time.sleep(7)
        status, j = call(node2, "GET", f"/1.0/operations/{op}", what="member")
        assert status == 404, f"set-up: LXD still has the operation after 7 s: {j}"
        status, j = call(gw, "GET", f"/1.0/operations/{op}", what="gateway")
        assert status == 200 and j["metadata"]["id"] == op and j["metadata"]["status"] == "Success", j
        status, j = call(gw, "GET", f"/1.0/operations/{op}/wait?timeout=5", what="gateway wait")
        assert status == 200 and j["metadata"]["status"] == "Success", j
    finally:
        call(gw, "DELETE", f"/1.0/storage-pools/pool1/volumes/custom/{vol}?target=node2", what="cleanup")
        gw.close()
        node2.close()


def test_a_request_for_one_member_goes_to_that_member(gateway, env):
    """A request that names a member in ?target= is sent to that member, not through another member's forward (which
    waits up to 10 s for LXD's member-to-member event link: a CI run read an operation 70 ms after it began, the
    forward took 7.2 s, and the client got "Operation not found"). Every way a request leaves the gateway: passed through,
    read and rewritten (one operation, the operation list, the server's description), a large upload (forward.h)."""
    host, port = gateway.addr.rsplit(":", 1)
    gw = http.client.HTTPSConnection(host, int(port), context=tls_context(env), timeout=30)
    unknown = "0b0e0b0e-0000-4000-8000-000000000000"
    try:
        for node in ("node2", "node3"):
            for path, want in ((f"/1.0/storage-pools/pool1?target={node}", 200), (f"/1.0/operations/{unknown}?target={node}", 404),
                               (f"/1.0/operations?target={node}", 200), (f"/1.0?target={node}", 200)):
                status, j = call(gw, "GET", path, what=path)
                assert status == want, (path, j)
                deadline = time.time() + 10
                while time.time() < deadline and f'path="{path}"' not in gateway.logtext():
                    time.sleep(0.1)
                lines = [line for line in gateway.logtext().splitlines() if f'path="{path}"' in line]
                assert lines and lines[-1].endswith(f"member={node}"), (path, lines[-1:])
            # a large upload (forward.h): a backup import LXD refuses (not a tarball), after the body reached the member
            path = f"/1.0/storage-pools/pool1/volumes/custom?target={node}"
            gw.request("POST", path, body=b"x" * (300 * 1024), headers={"Content-Type": "application/octet-stream",
                                                                         "X-LXD-name": "gw-not-a-backup"})
            r = gw.getresponse()
            r.read()
            assert r.status >= 400, r.status
            deadline = time.time() + 10
            while time.time() < deadline and f'method=POST path="{path}"' not in gateway.logtext():
                time.sleep(0.1)
            lines = [line for line in gateway.logtext().splitlines() if f'method=POST path="{path}"' in line]
            assert lines and lines[-1].endswith(f"member={node}"), (path, lines[-1:])
    finally:
        gw.close()
