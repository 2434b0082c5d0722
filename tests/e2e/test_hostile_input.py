"""Hostile input issue: no single request brings the gateway down, no state-changing request goes unaudited, and a
caller the cluster does not trust cannot make the gateway spend its disk or memory (request bodies, event queues).

Every hostile request of the first part is also sent to a member directly, to compare with what LXD 5.0.2 answers.
Direct requests carry the gateway's own identity (state_dir/identity.crt): that is what the gateway forwards an
unrestricted trusted client as, and LXD 5.0.2 answers the test client certificate itself as untrusted (403 on
everything) when it is presented to a member directly, although it is in the trust store.

The gateway is session-wide (conftest): `watch` below restarts it when a test killed it, so the next tests still run,
and the test that killed it fails naming the signal."""
import http.client
import json
import os
import select
import signal
import socket
import ssl
import stat
import struct
import subprocess
import threading
import time
import uuid

import pytest

from conftest import member_lxc
from helpers import MiB, make_image, sh, sha256_file

MEMBER = "127.0.0.11:8443"
NODES = ("node1", "node2", "node3")
SRC = "v-h-src"  # a real source volume on node1, so that only the hostile part of a request is wrong


# ---------------------------------------------------------------------------------------------------------------------
# the gateway process: alive after every request, restarted (once reported) when a test killed it

_killed = {}


def _describe_exit(rc):
    if rc is not None and rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def sanitized(gw):
    """The gateway under test runs with AddressSanitizer (its runtime is mapped into the process)."""
    with open(f"/proc/{gw.proc.pid}/maps") as f:
        return "libasan" in f.read()


def alive(gw, what):
    """Fails the calling test if the gateway died (now or within 0.3 s: a crash may trail the answer)."""
    deadline = time.time() + 0.3
    while gw.proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    rc = gw.proc.poll()
    if rc is not None:
        _killed[gw.proc.pid] = True
        tail = "\n".join(gw.logtext().splitlines()[-5:])
        pytest.fail(f"the gateway died after {what}: {_describe_exit(rc)}; last log lines:\n{tail}", pytrace=False)


@pytest.fixture(scope="module")
def gw(gateway):
    return gateway


@pytest.fixture(autouse=True)
def watch(gw):
    """After each test: a dead gateway is started again (so later tests measure something); a death the test did
    not report itself fails it here."""
    yield
    if gw.proc.poll() is not None:
        pid, rc = gw.proc.pid, gw.proc.returncode
        gw.start()
        if not _killed.pop(pid, False):
            pytest.fail(f"the gateway died during this test ({_describe_exit(rc)}); restarted for the next tests")


@pytest.fixture(scope="module")
def src_volume(gw):
    member_lxc("node1", "storage", "volume", "delete", "pool1", SRC, "--target", "node1", check=False)
    member_lxc("node1", "storage", "volume", "create", "pool1", SRC, "--target", "node1")
    yield SRC
    for node in NODES:
        out = member_lxc(node, "query", f"/1.0/storage-pools/pool1/volumes/custom?recursion=1&target={node}", check=False).stdout
        for v in json.loads(out or "[]"):
            if v["location"] == node and v["name"].startswith(("v-h", "x")):
                member_lxc(node, "storage", "volume", "delete", "pool1", v["name"], "--target", node, check=False)


# ---------------------------------------------------------------------------------------------------------------------
# a raw HTTP/1.1 client over TLS: arbitrary bytes in the request line, headers and body; every wait bounded


class Answer:
    def __init__(self, status, headers=None, body=b"", elapsed=0.0, error=None):
        self.status, self.headers, self.body, self.elapsed, self.error = status, headers or {}, body, elapsed, error

    def json(self):
        return json.loads(self.body.decode("utf-8"))  # strict: an envelope must be valid UTF-8 JSON

    def __repr__(self):
        return f"<{self.status} {self.error or ''} {self.body[:300]!r}>"


def tls_connect(addr, cert=None, key=None, timeout=10, rcvbuf=None):
    host, port = addr.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    if cert:
        ctx.load_cert_chain(cert, key)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # before connect: the window is negotiated then
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.connect((host, int(port)))
    return ctx.wrap_socket(raw)


def _recv(sock, what, deadline):
    sock.settimeout(max(0.05, deadline - time.time()))
    try:
        return sock.recv(1 << 16)
    except socket.timeout:
        raise AssertionError(f"{what}: no answer within the time allowed (hung)") from None


def read_answer(sock, what, deadline, started):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = _recv(sock, what, deadline)
        if not data:
            return Answer(0, elapsed=time.time() - started, error="connection closed before an answer")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    if status == 101 or status == 204 or status == 304:
        return Answer(status, headers, rest, time.time() - started)
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            data = _recv(sock, what, deadline)
            if not data:
                break
            rest += data
        return Answer(status, headers, rest[:n], time.time() - started)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                data = _recv(sock, what, deadline)
                if not data:
                    return Answer(status, headers, body, time.time() - started, "truncated chunked body")
                rest += data
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                data = _recv(sock, what, deadline)
                if not data:
                    return Answer(status, headers, body + rest, time.time() - started, "truncated chunked body")
                rest += data
            if size == 0:
                return Answer(status, headers, body, time.time() - started)
            body, rest = body + rest[:size], rest[size + 2:]
    while True:  # until the connection closes
        data = _recv(sock, what, deadline)
        if not data:
            return Answer(status, headers, rest, time.time() - started)
        rest += data


def http1(addr, method, target, headers=(), body=b"", cert=None, key=None, timeout=15, what=None):
    """One request, Connection: close. `target` and `body` may be bytes (sent as they are)."""
    what = what or f"{method} {target[:80]!r} to {addr}"
    target = target.encode() if isinstance(target, str) else target
    body = body.encode() if isinstance(body, str) else body
    started = time.time()
    deadline = started + timeout
    try:
        sock = tls_connect(addr, cert, key, timeout)
    except (OSError, ssl.SSLError) as e:
        return Answer(0, error=f"connect: {e}")
    try:
        hdr = [b"Host: " + addr.encode(), b"Connection: close", b"User-Agent: lxdgw-e2e"]
        hdr += [h.encode() if isinstance(h, str) else h for h in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            hdr.append(b"Content-Length: %d" % len(body))
        sock.settimeout(timeout)
        try:
            sock.sendall(method.encode() + b" " + target + b" HTTP/1.1\r\n" + b"\r\n".join(hdr) + b"\r\n\r\n" + body)
        except socket.timeout:
            raise AssertionError(f"{what}: sending the request hung") from None
        except (OSError, ssl.SSLError) as e:
            return Answer(0, elapsed=time.time() - started, error=f"send: {e}")
        try:
            return read_answer(sock, what, deadline, started)
        except (ConnectionError, ssl.SSLError) as e:
            return Answer(0, elapsed=time.time() - started, error=f"recv: {e}")
    finally:
        sock.close()


def curl_h2(url, args=(), cert=None, key=None, timeout=15, stdin=None, what=None):
    """An HTTP/2 request with curl; returns (Answer, curl's -w fields)."""
    cmd = ["curl", "-sk", "--http2", "--max-time", str(timeout), "-o", "-", "-w",
           "\n%{http_code} %{size_upload} %{time_starttransfer} %{time_total} %{http_version}"]
    if cert:
        cmd += ["--cert", cert, "--key", key]
    try:
        r = subprocess.run(cmd + list(args) + [url], capture_output=True, timeout=timeout + 10, stdin=stdin)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what or url}: curl hung past {timeout + 10} s") from None
    body, _, tail = r.stdout.rpartition(b"\n")
    code, up, ttfb, total, ver = tail.decode().split()
    return Answer(int(code), body=body, elapsed=float(total)), {"upload": int(float(up)), "ttfb": float(ttfb),
                                                                 "total": float(total), "version": ver, "rc": r.returncode}


def assert_envelope(ans, what, allowed=None):
    """LXD's error envelope: valid JSON, type error, error_code = the HTTP status, a 4xx status."""
    assert ans.status != 0, f"{what}: no HTTP answer ({ans.error})"
    if allowed and ans.status in allowed:
        return
    assert 400 <= ans.status < 500, f"{what}: status {ans.status}, want a 4xx error envelope: {ans.body[:500]!r}"
    try:
        j = ans.json()
    except ValueError as e:
        raise AssertionError(f"{what}: the answer is not valid UTF-8 JSON ({e}): {ans.body[:500]!r}") from None
    assert j.get("type") == "error" and j.get("error_code") == ans.status and isinstance(j.get("error"), str), \
        f"{what}: not LXD's error envelope: {j}"


# ---------------------------------------------------------------------------------------------------------------------
# item 1: a single request from a trusted client must not kill the gateway


def copy_body(name="v-h-new", source_name=SRC, location="node1"):
    return json.dumps({"name": name, "type": "custom",
                       "source": {"type": "copy", "name": source_name, "pool": "pool1", "location": location}})


WS_HEADERS = ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
              "Sec-WebSocket-Version: 13")
VOLS = "/1.0/storage-pools/pool1/volumes/custom"

# name -> (method, target, extra headers, body). Each is sent once to the gateway and once to a member directly.
HOSTILE = {
    # gw_lxd_send_error -> json_pack(NULL on invalid UTF-8) -> strlen(NULL)
    "copy-target-ff": ("POST", VOLS + "?target=%ff", (), copy_body()),
    # 300 three-byte characters after 0, 1 or 2 ASCII ones: whatever the size of a fixed buffer that cuts the
    # message, one of the three cuts a character in half
    "copy-location-300-multibyte+0": ("POST", VOLS + "?target=node2", (), copy_body(location="\u20ac" * 300)),
    "copy-location-300-multibyte+1": ("POST", VOLS + "?target=node2", (), copy_body(location="x" + "\u20ac" * 300)),
    "copy-location-300-multibyte+2": ("POST", VOLS + "?target=node2", (), copy_body(location="xy" + "\u20ac" * 300)),
    # the member's stream is opened with the client's query, written through a fixed 4 KiB buffer (wsclient.c)
    "events-upgrade-60k-query": ("GET", "/1.0/events?type=lifecycle&x=" + "a" * 60000, WS_HEADERS, b""),
    "copy-name-invalid-utf8": ("POST", VOLS + "?target=node2", (), copy_body().replace('"v-h-new"', '"v-h-\udcff\udcfe"')
                               .encode("utf-8", "surrogateescape")),
    "copy-project-ff": ("POST", VOLS + "?target=node2&project=%ff", (), copy_body()),
    "copy-source-name-100k": ("POST", VOLS + "?target=node2", (), copy_body(source_name="v" * 100000)),
    "copy-location-ff-escaped": ("POST", VOLS + "?target=node2", (), copy_body(location="\udcff")),
    "move-target-ff": ("POST", f"{VOLS}/{SRC}?target=%ff", (), json.dumps({"name": "x", "source": {"location": "node1"}})),
    "move-location-300-multibyte+0": ("POST", f"{VOLS}/{SRC}?target=node2", (),
                                      json.dumps({"name": "x", "source": {"location": "" + "\u20ac" * 300}})),
    "move-location-300-multibyte+1": ("POST", f"{VOLS}/{SRC}?target=node2", (),
                                      json.dumps({"name": "x", "source": {"location": "x" + "\u20ac" * 300}})),
    "move-location-300-multibyte+2": ("POST", f"{VOLS}/{SRC}?target=node2", (),
                                      json.dumps({"name": "x", "source": {"location": "xx" + "\u20ac" * 300}})),
    "get-header-200k": ("GET", "/1.0", ("X-Filler: " + "h" * 200000,), b""),
    "copy-header-200k": ("POST", VOLS + "?target=node9", ("X-Filler: " + "h" * 200000,), copy_body()),
    "get-header-600k": ("GET", "/1.0", ("X-Filler: " + "h" * 600000,), b""),
    "get-300-headers": ("GET", "/1.0", tuple(f"X-F{i}: {i}" for i in range(300)), b""),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_one_request_does_not_kill_the_gateway(gw, env, src_volume, case):
    method, target, headers, body = HOSTILE[case]
    direct = http1(MEMBER, method, target, headers, body, os.path.join(gw.state, "identity.crt"),
                   os.path.join(gw.state, "identity.key"), what=f"{case} sent to LXD directly")
    ans = http1(gw.addr, method, target, headers, body, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"],
                what=f"{case} sent to the gateway")
    print(f"{case}: LXD directly {direct.status} {direct.body[:160]!r}; gateway {ans.status} {ans.error or ''} {ans.body[:160]!r}")
    alive(gw, f"{case} (one request from a trusted client)")
    if case in ("get-header-600k", "get-300-headers"):
        # past h2o's own limits (417 KiB of request head, 100 headers): h2o answers "400 Bad Request" in plain text
        # before any handler runs (LXD, Go: 1 MiB, no count limit, answers 200). Any 4xx, or LXD's answer, will do.
        assert ans.status == direct.status or 400 <= ans.status < 500, ans
    elif ans.status != direct.status:
        # Where the gateway's answer is not LXD's own, it must be LXD's error envelope with a 4xx status. It differs
        # where the gateway claims the request: LXD 5.0.2 does not know source.location (it answers 202 and copies,
        # or fails, on the target member), while the gateway checks the members named first (404 "Cluster member
        # not found"). For the 60 KB event query LXD upgrades (101); the gateway may refuse it (4xx envelope).
        assert_envelope(ans, f"{case} (LXD directly: {direct.status})")
    # and it still serves
    again = http1(gw.addr, "GET", "/1.0", (), b"", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"], what="GET /1.0 afterwards")
    assert again.status == 200, again


def test_copy_target_ff_over_http2(gw, env, src_volume):
    ans, info = curl_h2(f"{gw.url}{VOLS}?target=%ff", ["-X", "POST", "-H", "Content-Type: application/json",
                                                        "--data-binary", copy_body()],
                        env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"], what="HTTP/2 copy with ?target=%ff")
    print(f"HTTP/2 copy ?target=%ff: {ans.status} {ans.body[:200]!r} curl rc {info['rc']}")
    alive(gw, "an HTTP/2 copy with ?target=%ff")
    assert_envelope(ans, "HTTP/2 copy with ?target=%ff")


# ---------------------------------------------------------------------------------------------------------------------
# item 2: every state-changing request is audited, whatever bytes its path holds


def test_audit_line_for_a_path_that_is_not_utf8(gw, env):
    audit = os.path.join(gw.state, "audit.log")
    marker = uuid.uuid4().hex[:12].encode()
    paths = {
        "bytes ff fe": b"/1.0/storage-pools/pool1/volumes/custom/h-" + marker + b"-1-\xff\xfe",
        "quote and backslash": b"/1.0/storage-pools/pool1/volumes/custom/h-" + marker + b'-2-q"b\\',
        "latin-1 e9": b"/1.0/instances/h-" + marker + b"-3-caf\xe9",
    }
    answers = {}
    for name, path in paths.items():
        answers[name] = http1(gw.addr, "DELETE", path, (), b"", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"],
                              what=f"DELETE with {name} in the path")
        alive(gw, f"DELETE with {name} in the path")
        assert answers[name].status != 0, answers[name]
    time.sleep(0.5)  # the audit line is written when the request's log is (after the answer)
    with open(audit, "rb") as f:
        raw = f.read()
    for i, line in enumerate(raw.splitlines()):
        try:
            json.loads(line.decode("utf-8"))
        except ValueError as e:
            raise AssertionError(f"audit.log line {i + 1} is not valid UTF-8 JSON ({e}): {line[:300]!r}") from None
    lines = [json.loads(ln.decode()) for ln in raw.splitlines()]
    ours = [ln for ln in lines if marker.decode() in ln.get("path", "")]
    print("audit lines:", ours, {k: a.status for k, a in answers.items()})
    for name, path in paths.items():
        head, _, tail = path.partition(b"-" + marker + b"-")
        prefix = head.decode() + "-" + marker.decode() + "-" + tail[:2].decode()  # ".../h-<marker>-N-"
        hits = [ln for ln in ours if ln["path"].startswith(prefix) and ln["path"] != prefix]
        assert hits, f"no audit line for DELETE {path!r} (answered {answers[name].status}): audit.log has {ours}"
        ln = hits[-1]
        assert ln["method"] == "DELETE" and ln["status"] == answers[name].status, ln
        rest = ln["path"][len(prefix):].lower()
        if name == "bytes ff fe":
            assert "ff" in rest and "fe" in rest, f"the bytes \\xff\\xfe must show (escaped) in the audited path: {ln['path']!r}"
        elif name == "latin-1 e9":
            assert "e9" in rest, f"the byte \\xe9 must show (escaped) in the audited path: {ln['path']!r}"
        else:
            assert rest == 'q"b\\', ln["path"]


# ---------------------------------------------------------------------------------------------------------------------
# item 3: an untrusted caller's request body costs the gateway nothing


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def spill_bytes(pid):
    """Bytes in the process's open but unlinked regular files (h2o's body spill: fds and mappings)."""
    sizes = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if not target.endswith(" (deleted)") or not target.startswith("/") or target.startswith(("/memfd:", "/dev/")):
                continue
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[st.st_ino] = max(sizes.get(st.st_ino, 0), st.st_size)
    mapped = {}
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6:
                    continue
                path = parts[5].rstrip("\n")
                if not path.endswith(" (deleted)") or not path.startswith("/") or path.startswith(("/memfd:", "/dev/", "/SYSV")):
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                ino = int(parts[4])
                mapped[ino] = mapped.get(ino, 0) + hi - lo
    except OSError:
        pass
    for ino, n in mapped.items():
        sizes[ino] = max(sizes.get(ino, 0), n)
    return sum(sizes.values())


class Sampler:
    """Samples the gateway's spill files and RSS every 50 ms while a test runs something."""

    def __init__(self, pid):
        self.pid, self.spill, self.rss0 = pid, 0, rss_kib(pid)
        self.rss = self.rss0
        self.stop_ = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_.is_set():
            self.spill = max(self.spill, spill_bytes(self.pid))
            self.rss = max(self.rss, rss_kib(self.pid))
            self.stop_.wait(0.05)

    def stop(self):
        self.stop_.set()
        self.t.join(5)
        return self

    def __str__(self):
        return f"spill max {self.spill / MiB:.1f} MiB, RSS {self.rss0 / 1024:.0f} -> max {self.rss / 1024:.0f} MiB"


BIG = 512 * MiB  # streamed, never on disk on the client's side
CHUNK = 256 * 1024


def stream_upload(addr, path, size, chunked, cert=None, key=None, limit=20.0, extra_headers=()):
    """POSTs `size` zero bytes, written as fast as the server takes them, watching for an answer while sending.
    Returns (Answer, bytes sent when the answer began, seconds until it began)."""
    started = time.time()
    deadline = started + limit
    sock = tls_connect(addr, cert, key, timeout=limit)
    hdr = [f"POST {path} HTTP/1.1", f"Host: {addr}", "Content-Type: application/octet-stream", "User-Agent: lxdgw-e2e",
           *extra_headers]
    hdr.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    sock.sendall(("\r\n".join(hdr) + "\r\n\r\n").encode())
    sock.setblocking(False)
    zero = b"\0" * CHUNK
    piece = (b"%x\r\n" % CHUNK + zero + b"\r\n") if chunked else zero
    pending, sent, got, answered_at, sent_at_answer = b"", 0, b"", None, None
    try:
        while time.time() < deadline:
            want_write = sent < size or pending
            r, w, _ = select.select([sock], [sock] if want_write else [], [], max(0.01, deadline - time.time()))
            if r:
                try:
                    data = sock.recv(1 << 16)
                    if not data:
                        break
                    if answered_at is None:
                        answered_at, sent_at_answer = time.time() - started, sent
                    got += data
                    if b"\r\n\r\n" in got:
                        break
                except ssl.SSLWantReadError:
                    pass
                except (ConnectionError, ssl.SSLError):
                    break
            if w and want_write:
                if not pending:
                    pending = piece if sent + CHUNK <= size else (
                        (b"%x\r\n" % (size - sent) + zero[:size - sent] + b"\r\n") if chunked else zero[:size - sent])
                    if chunked and sent + CHUNK >= size:
                        pending += b"0\r\n\r\n"
                    n_body = min(CHUNK, size - sent)
                    pending_body = n_body
                try:
                    n = sock.send(pending)
                    pending = pending[n:]
                    if not pending:
                        sent += pending_body
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
                except (ConnectionError, ssl.SSLError):
                    break  # the server closed the connection: read what it said
        else:
            raise AssertionError(f"POST {path} ({'chunked' if chunked else 'Content-Length'}): no answer within {limit} s "
                                 f"({sent / MiB:.0f} MiB sent)")
        sock.setblocking(True)
        if b"\r\n\r\n" not in got:
            try:
                ans = read_answer(sock, f"POST {path}", deadline, started)
                if answered_at is None:
                    answered_at, sent_at_answer = time.time() - started, sent
                return ans, sent_at_answer, answered_at
            except (ConnectionError, ssl.SSLError) as e:
                return Answer(0, error=str(e)), sent, time.time() - started
        status = int(got.split(b"\r\n", 1)[0].split()[1])
        return Answer(status, body=got.partition(b"\r\n\r\n")[2]), sent_at_answer, answered_at
    finally:
        sock.close()


WHO = {"no-cert": (None, None), "untrusted-cert": ("LXDGW_UNTRUSTED_CERT", "LXDGW_UNTRUSTED_KEY")}


def who_cert(env, who):
    c, k = WHO[who]
    return (env[c], env[k]) if c else (None, None)


@pytest.mark.parametrize("proto", ["h1-content-length", "h1-chunked", "h2"])
@pytest.mark.parametrize("who", list(WHO))
def test_untrusted_large_body_is_refused_early(gw, env, who, proto):
    cert, key = who_cert(env, who)
    if proto == "h1-content-length" and who == "no-cert":  # what LXD itself does with the same request
        d, d_sent, d_at = stream_upload(MEMBER, "/1.0/images", BIG, False, cert, key)
        print(f"LXD directly: {d.status} after {d_at:.3f} s, {d_sent / MiB:.1f} MiB sent by then")
    s = Sampler(gw.proc.pid)
    try:
        if proto == "h2":
            head = subprocess.Popen(["head", "-c", str(BIG), "/dev/zero"], stdout=subprocess.PIPE)
            try:
                ans, info = curl_h2(f"{gw.url}/1.0/images", ["-X", "POST", "-T", "-", "-H", "Content-Type: application/octet-stream"],
                                    cert, key, timeout=20, stdin=head.stdout, what=f"HTTP/2 untrusted ({who}) upload")
            finally:
                head.kill()
                head.wait(5)
            sent, at = info["upload"], info["total"]  # curl ends once the answer is complete
            if info["rc"] != 0 and info["version"] == "0":
                # h2o refuses the stream (RST_STREAM REFUSED_STREAM) past the untrusted body limit: no HTTP status
                # reaches curl, which then cannot rewind stdin to retry (exit 65). A refusal, provided it was early.
                ans = Answer(403, error=f"stream refused (curl exit {info['rc']})")
            else:
                assert info["version"] == "2", info
        else:
            ans, sent, at = stream_upload(gw.addr, "/1.0/images", BIG, proto == "h1-chunked", cert, key)
    finally:
        s.stop()
    print(f"{who} {proto}: {ans.status} after {at:.2f} s, {sent / MiB:.1f} MiB sent by then; {s}")
    alive(gw, f"an untrusted ({who}) {BIG // MiB} MiB upload over {proto}")
    # a 4xx answer; or, where the gateway refuses by closing the connection at once, the client may see only the
    # reset (its unread body makes the server's close a RST, which can drop the answer): a refusal as well
    assert 400 <= ans.status < 500 or (ans.status == 0 and at < 2.0), f"want a 4xx refusal, got {ans.status} {ans.error or ''}"
    wrong = []
    if at >= 2.0:
        wrong.append(f"refused only after {at:.2f} s (want < 2 s)")
    if sent >= 64 * MiB:
        wrong.append(f"{sent / MiB:.0f} MiB of the body taken before the refusal (want a small part, < 64 MiB)")
    if s.spill > 4 * MiB:
        wrong.append(f"{s.spill / MiB:.0f} MiB spilled to disk (want <= 4 MiB)")
    if s.rss - s.rss0 > 24 * 1024:
        wrong.append(f"RSS grew by {(s.rss - s.rss0) / 1024:.0f} MiB (want <= 24 MiB)")
    assert not wrong, f"an untrusted ({who}) {BIG // MiB} MiB upload over {proto}: " + "; ".join(wrong)


@pytest.mark.parametrize("proto", ["h1-chunked", "h2"])
def test_trusted_large_upload_still_works(gw, env, tmp_path, proto):
    img = str(tmp_path / "img.tar")
    make_image(img, 64 * MiB, "hostile e2e")
    fp = sha256_file(img)
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    try:
        if proto == "h2":
            ans, info = curl_h2(f"{gw.url}/1.0/images", ["-X", "POST", "-T", img, "-H", "Content-Type: application/octet-stream"],
                                cert, key, timeout=60, what="trusted HTTP/2 image upload")
        else:  # streamed from the file in chunks, as `curl -T -` would
            with open(img, "rb") as f:
                cat = subprocess.Popen(["curl", "-sk", "--http1.1", "--max-time", "60", "--cert", cert, "--key", key, "-X", "POST",
                                        "-T", "-", "-H", "Content-Type: application/octet-stream", "-o", "-", "-w", "\n%{http_code}",
                                        f"{gw.url}/1.0/images"], stdin=f, stdout=subprocess.PIPE)
                try:
                    out, _ = cat.communicate(timeout=70)
                except subprocess.TimeoutExpired:
                    cat.kill()
                    raise AssertionError("trusted chunked image upload hung") from None
            body, _, code = out.rpartition(b"\n")
            ans = Answer(int(code or 0), body=body)
        alive(gw, f"a trusted 64 MiB upload over {proto}")
        assert ans.status == 202, ans
        op = ans.json()["operation"]
        code = http1(gw.addr, "GET", f"{op}/wait?timeout=60", (), b"", cert, key, timeout=70, what="waiting on the image import")
        assert code.status == 200 and code.json()["metadata"]["status"] == "Success", code
        assert code.json()["metadata"]["metadata"]["fingerprint"] == fp
    finally:
        member_lxc("node1", "image", "delete", fp, check=False)


def test_client_revoked_on_an_open_connection_gets_the_untrusted_body_limit(gw, tmp_path):
    """A connection's body limit is chosen at its handshake: a client trusted then and revoked since, sending a large
    body on the same keep-alive connection, is refused like any untrusted caller (413, LXD's envelope), and the body
    goes nowhere."""
    import http.client
    crt, key = str(tmp_path / "rev.crt"), str(tmp_path / "rev.key")
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-nodes", "-keyout", key,
        "-out", crt, "-days", "2", "-subj", "/CN=revoked-on-open-connection"])
    fp = sh(["openssl", "x509", "-in", crt, "-noout", "-fingerprint", "-sha256"]).stdout.split("=")[1].strip()
    fp = fp.replace(":", "").lower()
    member_lxc("node1", "config", "trust", "add", crt)
    try:
        gw.wait_trusted(crt, key)
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(crt, key)
        host, port = gw.addr.rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=15)
        conn.request("GET", "/1.0")
        first = conn.getresponse()
        assert json.loads(first.read())["metadata"]["auth"] == "trusted"
        member_lxc("node1", "config", "trust", "remove", fp[:12])
        deadline = time.time() + 10
        while time.time() < deadline:  # the gateway sees the revocation (a new connection each time)
            probe = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=15)
            probe.request("GET", "/1.0")
            if json.loads(probe.getresponse().read())["metadata"]["auth"] == "untrusted":
                break
            time.sleep(0.3)
        conn.request("POST", "/1.0/images", body=b"x" * (1 << 20), headers={"Content-Type": "application/octet-stream"})
        ans = conn.getresponse()
        body = ans.read()
        assert ans.status == 413, (ans.status, body[:300])
        j = json.loads(body)
        assert j["type"] == "error" and j["error_code"] == 413, j
    finally:
        member_lxc("node1", "config", "trust", "remove", fp[:12], check=False)
    alive(gw, "a large body from a client revoked on its open connection")


@pytest.mark.parametrize("who", list(WHO))
def test_untrusted_10mb_certificate_post_is_refused_quickly(gw, env, tmp_path, who):
    cert, key = who_cert(env, who)
    body = json.dumps({"type": "client", "name": "h", "password": "p" * (10 * 1000 * 1000)})
    direct = http1(MEMBER, "POST", "/1.0/certificates", ("Content-Type: application/json",), body, cert, key, timeout=20,
                   what="10 MB POST /1.0/certificates to LXD directly")
    ans = http1(gw.addr, "POST", "/1.0/certificates", ("Content-Type: application/json",), body, cert, key, timeout=20,
                what="10 MB POST /1.0/certificates to the gateway")
    print(f"{who}: LXD directly {direct.status} in {direct.elapsed:.2f} s {direct.body[:120]!r}; "
          f"gateway {ans.status} in {ans.elapsed:.2f} s {ans.body[:120]!r}")
    alive(gw, "a 10 MB POST /1.0/certificates")
    # h2o refuses the body past the untrusted limit (413) and closes at once; the client, still sending, may see the
    # close (EOF, reset) before it reads the 413: either is a refusal, as long as it came early
    assert 400 <= ans.status < 500 or (ans.status == 0 and "connect" not in (ans.error or "")), ans
    assert ans.elapsed < 2.0, f"answered after {ans.elapsed:.2f} s"


# ---------------------------------------------------------------------------------------------------------------------
# item 4: an event listener that stops reading is disconnected; the gateway's memory stays flat


def ws_frames(buf):
    """Splits complete server frames off buf: ([(opcode, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        op, n = buf[0] & 0x0F, buf[1] & 0x7F
        i = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, i = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, i = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < i + n:
            break
        out.append((op, buf[i:i + n]))
        buf = buf[i + n:]
    return out, buf


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("lxd", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def unix_get(sock_path, targets, timeout=30):
    """GETs each target from a member's unix socket (its local admin), on one keep-alive connection."""
    conn = _UnixHTTP(sock_path, timeout)
    try:
        for t in targets:
            conn.request("GET", t, headers={"User-Agent": "lxdgw-e2e"})
            r = conn.getresponse()
            r.read()
            assert r.status == 200, (t[:60], r.status)
    except socket.timeout:
        raise AssertionError(f"a member's unix socket did not answer within {timeout} s") from None
    finally:
        conn.close()


EVENT_BYTES = 900 * 1000  # each request's URL comes back in one "Handling API request" logging event
EVENTS = 100  # ~ 86 MiB of events, in ~15 s (freed heap from earlier tests is reused: a margin)


def test_stalled_event_listener_is_disconnected_and_memory_stays_flat(gw, env):
    cluster = os.environ["LXDGW_CLUSTER_DIR"]
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    rss0 = rss_kib(gw.proc.pid)
    # a small receive window: what the kernel buffers on our side stays small
    sock = tls_connect(gw.addr, cert, key, timeout=10, rcvbuf=64 * 1024)
    try:
        sock.sendall(("GET /1.0/events?type=logging HTTP/1.1\r\nHost: x\r\n" + "\r\n".join(WS_HEADERS) + "\r\n\r\n").encode())
        up = read_answer(sock, "the /1.0/events upgrade", time.time() + 10, time.time())
        assert up.status == 101, up
        alive(gw, "opening /1.0/events")
        # which member feeds this stream: a marker request on each, until one comes back
        buf, member = up.body, None
        markers = {n: "m" + uuid.uuid4().hex for n in NODES}
        for n in NODES:
            unix_get(f"{cluster}/{n}/unix.socket", [f"/1.0?marker={markers[n]}"])
        deadline = time.time() + 10
        while member is None and time.time() < deadline:
            buf += _recv(sock, "the first events", deadline)
            frames, buf = ws_frames(buf)
            for op, payload in frames:
                for n, m in markers.items():
                    if m.encode() in payload:
                        member = n
        assert member is not None, "no logging event came through the gateway within 10 s"
        # now stop reading, and make the member send EVENTS large events
        s = Sampler(gw.proc.pid)
        s.rss0 = rss0
        started = time.time()
        try:
            filler = "f" * EVENT_BYTES
            unix_get(f"{cluster}/{member}/unix.socket", [f"/1.0?filler={i}{filler}" for i in range(EVENTS)], timeout=60)
            took = time.time() - started
            time.sleep(3)  # the member's stream reaches the gateway
        finally:
            s.stop()
        print(f"{EVENTS} events of {EVENT_BYTES // 1000} kB from {member} in {took:.1f} s; gateway {s}")
        alive(gw, "a flood of events to a listener that does not read")
        # read again: a disconnected listener finds its buffered events, then the end
        # (at most 10 s: the member's own debug events, heartbeats, keep a live stream busy)
        received, closed, until = 0, False, time.time() + 10
        sock.setblocking(True)
        while time.time() < until:
            sock.settimeout(max(0.1, until - time.time()))
            try:
                data = sock.recv(1 << 20)
            except socket.timeout:
                break
            except (ConnectionError, ssl.SSLError):
                closed = True
                break
            if not data:
                closed = True
                break
            received += len(data)
            buf += data
            frames, buf = ws_frames(buf)
            if any(op == 8 for op, _ in frames):
                closed = True
                break
        print(f"then read {received / MiB:.1f} MiB; connection closed by the gateway: {closed}")
    finally:
        sock.close()
    grew = (s.rss - rss0) / 1024
    # AddressSanitizer keeps freed memory in its quarantine (256 MiB by default) to catch use-after-free, so RSS does
    # not show what the gateway holds there: the sanitizer build checks the disconnection, the normal build both
    if not sanitized(gw):
        assert grew < 32, f"the gateway's RSS grew by {grew:.0f} MiB holding events for a listener that does not read ({s})"
    assert closed, (f"the stalled listener was never disconnected: it could still read {received / MiB:.0f} MiB of queued "
                    f"events afterwards")
