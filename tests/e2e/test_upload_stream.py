"""Uploads over HTTP/1.1 pass through while the client sends them (gateway/upload.h): the gateway holds a bounded
window of the body, never the whole of it, and a member that dies mid-upload ends the upload with an error."""
import json
import os
import re
import subprocess
import threading
import time

import pytest

from helpers import MiB, random_file, sh, sha256_file

CLUSTER = os.path.join(os.environ["LXDGW_TOP"], "tests/cluster/cluster.sh")
WINDOW_BOUND = 48 * MiB  # gateway/upload.h: an 8 MiB window, plus what h2o and libcurl buffer around it


class Held:
    """Samples, every 20 ms, how much of a body the gateway process holds: its anonymous memory above where it
    started, and the bytes of any spilled body it has open, unlinked ones included (`du` cannot see those)."""

    def __init__(self, pid):
        self.pid, self.peak_anon, self.spill, self.stop_flag, self.what = pid, 0, 0, False, ""
        with open(f"/proc/{pid}/maps") as f:
            self.asan = "libasan" in f.read()  # ASan keeps freed memory in quarantine: its RSS says nothing here
        self.base = self.anon()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def anon(self):
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

    def run(self):
        while not self.stop_flag:
            self.peak_anon = max(self.peak_anon, self.anon() - self.base)
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                    size = os.stat(f"/proc/{self.pid}/fd/{fd}").st_size
                    # h2o's body spills and buffers past 32 MiB: state_dir/body.XXXXXX, unlinked (other unlinked
                    # files are not bodies: a journal another gateway on the same state_dir rewrote, say)
                    if "/body." in target and size > self.spill:
                        self.spill, self.what = size, target
                except OSError:
                    pass  # closed meanwhile
            time.sleep(0.02)

    def stop(self):
        self.stop_flag = True
        self.thread.join(timeout=10)

    def check(self):
        assert self.spill == 0, f"a body was spilled to a file of {self.spill} bytes: {self.what}"
        if not self.asan:
            assert self.peak_anon < WINDOW_BOUND, f"the gateway's memory grew by {self.peak_anon >> 20} MiB"


@pytest.fixture(scope="module")
def box(lxc):
    lxc.run("delete", "-f", "gw:up1", check=False)
    lxc.run("launch", "gw:busybox", "gw:up1", "--target", "node2")
    yield "up1"
    lxc.run("delete", "-f", "gw:up1", check=False)


def test_lxc_file_push_streams_through_a_bounded_window(gateway, lxc, box, tmp_path):
    """`lxc file push` sends chunked HTTP/1.1: 128 MiB reach the container intact while the gateway holds at most
    its window of them (no spill file, memory bounded; a buffered body spills past 32 MiB)."""
    src = tmp_path / "big"
    random_file(src, 128 * MiB)
    held = Held(gateway.proc.pid)
    try:
        lxc.run("file", "push", str(src), f"gw:{box}/root/big", timeout=300)
    finally:
        held.stop()
    held.check()
    out = lxc.run("exec", f"gw:{box}", "--", "sh", "-c", "sha256sum /root/big; rm /root/big").stdout.split()[0]
    assert out == sha256_file(src)


def test_content_length_upload_streams_and_a_slow_one_is_not_cut(gateway, lxc, box, env, tmp_path):
    """curl over HTTP/1.1 with a Content-Length: the same bounded window. A client slower than h2o's request
    timeout (10 s for the whole request) is not cut while it keeps sending."""
    src = tmp_path / "cl"
    random_file(src, 24 * MiB)
    base = ["curl", "-sk", "--http1.1", "--max-time", "120", "--cert", env["LXDGW_CLIENT_CERT"], "--key",
            env["LXDGW_CLIENT_KEY"], "-X", "POST", "-T", str(src), "-w", "\n%{http_code}"]
    for name, extra in (("fast", []), ("slow", ["--limit-rate", "1800K"])):  # slow: ~14 s
        held = Held(gateway.proc.pid)
        try:
            r = sh(base + extra + [f"{gateway.url}/1.0/instances/{box}/files?path=/root/{name}"], timeout=150)
        finally:
            held.stop()
        body, _, code = r.stdout.rpartition("\n")
        assert code == "200", (name, r.stdout, r.stderr)
        assert json.loads(body)["type"] == "sync"
        held.check()
        out = lxc.run("exec", f"gw:{box}", "--", "sh", "-c", f"sha256sum /root/{name}; rm /root/{name}").stdout.split()[0]
        assert out == sha256_file(src), name


def test_member_killed_mid_upload_ends_it_with_an_error(gateway, env, tmp_path):
    """A custom volume import (a backup tarball, octet-stream) to node3 streams there; node3 is killed while the
    client is still sending. The client gets an error at once (no hang, no success), the gateway holds nothing of the
    body afterwards, and once node3 is back no volume of that name exists."""
    src = tmp_path / "import"
    random_file(src, 64 * MiB)
    up = subprocess.Popen(["curl", "-sk", "--http1.1", "--max-time", "60", "--limit-rate", "4M", "--cert",
                           env["LXDGW_CLIENT_CERT"], "--key", env["LXDGW_CLIENT_KEY"], "-X", "POST", "-T", str(src),
                           "-H", "Content-Type: application/octet-stream", "-H", "X-LXD-name: gw-killed", "-w",
                           "\n%{http_code}", f"{gateway.url}/1.0/storage-pools/pool1/volumes/custom?target=node3"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)  # ~12 MiB sent, and passed on
        assert up.poll() is None, up.communicate()
        sh(["bash", CLUSTER, "kill", "node3"])
        killed = time.time()
        out, err = up.communicate(timeout=30)
        took = time.time() - killed
        body, _, code = out.rpartition("\n")
        assert code != "200" and not code.startswith("2"), (code, body)
        if code not in ("000", ""):
            assert json.loads(body)["type"] == "error", body
        assert took < 8, f"the client waited {took:.1f} s after its member died (it had ~13 s of body left to send)"
        held = Held(gateway.proc.pid)
        time.sleep(0.2)
        held.stop()
        assert held.spill == 0
    finally:
        if up.poll() is None:
            up.kill()
        sh(["bash", CLUSTER, "start", "node3"])
        sh(["bash", CLUSTER, "settle"], timeout=120)
    r = sh(["bash", CLUSTER, "lxc", "node3", "storage", "volume", "list", "pool1", "--format", "json"])
    assert "gw-killed" not in {v["name"] for v in json.loads(r.stdout)}


def lingering(metrics_url):
    """lxd_gateway_lingering_connections of the gateway's /metrics."""
    text = sh(["curl", "-s", "--max-time", "10", metrics_url]).stdout
    found = re.search(r"^lxd_gateway_lingering_connections (\d+)$", text, re.M)
    assert found, text[-2000:]
    return int(found.group(1))


def test_chunked_body_over_the_limit_is_ended_there(gateway, env, tmp_path):
    """A chunked body (its length unknown at its head) that goes over `limits.max_request_body` is ended at the
    limit: the client gets LXD's envelope with 413 at once, not after sending the rest. (An image import: LXD reads
    the whole body before it looks at it.)"""
    from helpers import Gateway
    with open(gateway.config) as f:
        conf = f.read().replace("listen: [\"127.0.0.1:8443\"]", "listen: [\"127.0.0.1:8445\"]")
    conf = conf.replace("listen: 127.0.0.1:9443", "listen: 127.0.0.1:9445")
    assert "limits:" not in conf, conf
    path = os.path.join(gateway.state, "small-body.yaml")
    with open(path, "w") as f:
        f.write(conf + "\nlimits:\n  max_request_body: 1MiB\n")
    gw = Gateway(gateway.binary, gateway.state, "127.0.0.1:8445", config=path, name="small-body")
    gw.start()
    try:
        src = tmp_path / "over"
        random_file(src, 32 * MiB)
        started = time.time()
        r = sh(["curl", "-sk", "--http1.1", "--max-time", "60", "--limit-rate", "2M", "--cert", env["LXDGW_CLIENT_CERT"],
                "--key", env["LXDGW_CLIENT_KEY"], "-X", "POST", "-H", "Transfer-Encoding: chunked", "-H",
                "Content-Type: application/octet-stream", "-T", str(src), "-w", "\n%{http_code}", f"{gw.url}/1.0/images"],
               check=False)
        took = time.time() - started
        body, _, code = r.stdout.rpartition("\n")
        assert code == "413", (code, body, r.stderr)
        assert json.loads(body)["error_code"] == 413, body
        assert took < 8, f"the over-long body was read for {took:.1f} s (16 s at this rate)"
        # the connection lingered past h2o's close (so that the 413 is not lost to a reset while curl still sent):
        # the gateway lets it go once curl closed, and never keeps it past GW_LINGER_MS (5 s)
        deadline = time.time() + 10
        while lingering("http://127.0.0.1:9445/metrics") != 0 and time.time() < deadline:
            time.sleep(0.2)
        assert lingering("http://127.0.0.1:9445/metrics") == 0, "a lingering connection was kept past 5 s"
    finally:
        gw.stop()
        gw.check_sanitizers()
