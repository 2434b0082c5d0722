"""Small helpers shared by the e2e tests: running commands, the gateway process, lxc with its own config."""
import glob
import hashlib
import json
import os
import signal
import subprocess
import tarfile
import time


MiB = 1 << 20
CLUSTER_DIR = os.environ.get("LXDGW_CLUSTER_DIR", "/var/tmp/lxdgw-cluster")


# The longest one client call of the suite may take: a call that never ends (a client that missed its operation's
# completion on /1.0/events, a member or gateway that never answers) fails within this, naming itself, instead of
# holding the run for 10 minutes. The slowest legitimate calls (300 MiB file push/pull and image import/export, 1 GiB
# volume fills, on the sanitizer build of a loaded CI machine) end well within it; a caller that needs more passes
# timeout=.
CALL_TIMEOUT = 240


def hung(cmd, timeout, e):
    """The AssertionError for `cmd` not having ended within `timeout` s (e: its subprocess.TimeoutExpired): the command
    line and the end of what it printed so far."""
    def tail(out):
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        return (out or "")[-2000:]
    return AssertionError(f"HUNG after {timeout} s: {' '.join(cmd)}\nstdout: {tail(e.stdout)}\n"
                          f"stderr: {tail(e.stderr)}")


def sh(cmd, check=True, input=None, timeout=CALL_TIMEOUT, env=None):
    # no input: an empty pipe, never the runner's stdin (`incus storage volume create` reads YAML from a stdin that is
    # not a terminal: a test started from a shell whose stdin had data got "yaml: line 318: ..."; incus 6.0.4 also
    # fails on /dev/null, so not DEVNULL)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, input="" if input is None else input, timeout=timeout,
                           env=env)
    except subprocess.TimeoutExpired as e:
        raise hung(cmd, timeout, e) from None
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def curl(url, cert=None, key=None, method="GET", data=None, headers=(), timeout=60):
    """Raw API call; returns (http status, parsed JSON body or text)."""
    cmd = ["curl", "-sk", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--max-time", str(timeout)]
    if cert:
        cmd += ["--cert", cert, "--key", key]
    for h in headers:
        cmd += ["-H", h]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", data if isinstance(data, str) else json.dumps(data)]
    r = sh(cmd + [url], check=False, timeout=timeout + 10)
    body, _, code = r.stdout.rpartition("\n")
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return int(code or 0), body


class Gateway:
    def __init__(self, binary, state, addr, config=None, name="gateway"):
        self.binary, self.state, self.addr = binary, state, addr
        self.config = config or os.path.join(state, "lxd-gateway.yaml")
        self.logname = os.path.join(state, name + ".log")
        self.url = f"https://{addr}"
        self.proc = None
        self.asan_prefix = os.path.join(state, name + "-sanitizer")

    def start(self, extra_env=None):
        env = dict(os.environ, **(extra_env or {}))
        # leaks at exit are not checked yet (the process does not free its global state on SIGTERM)
        env["ASAN_OPTIONS"] = f"log_path={self.asan_prefix}:detect_leaks=0:abort_on_error=0"
        env["UBSAN_OPTIONS"] = f"log_path={self.asan_prefix}:print_stacktrace=1"
        self.log = open(self.logname, "ab")
        self.proc = subprocess.Popen([self.binary, "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            assert self.proc.poll() is None, f"gateway exited: {self.logtext()[-4000:]}"
            r = subprocess.run(["curl", "-sk", "--max-time", "2", self.url + "/1.0"], capture_output=True, text=True)
            # ours answered: it listens (another process on the same port must not pass for it) and is alive
            if r.returncode == 0 and '"type":"sync"' in r.stdout and "msg=listening" in self.logtext():
                time.sleep(0.2)
                assert self.proc.poll() is None, f"gateway exited: {self.logtext()[-4000:]}"
                return
            time.sleep(0.2)
        raise AssertionError("gateway did not answer GET /1.0 within 20 s: " + self.logtext()[-4000:])

    def wait_trusted(self, cert, key, timeout=10):
        """Waits until the gateway's trust mirror knows `cert` (it refreshes every 2 s)."""
        from helpers import curl as _curl
        deadline = time.time() + timeout
        while time.time() < deadline:
            code, body = _curl(self.url + "/1.0", cert, key)
            if code == 200 and body["metadata"].get("auth") == "trusted":
                return
            time.sleep(0.3)
        raise AssertionError("gateway never saw the certificate as trusted")

    def wait_log(self, text, since=0, timeout=60):
        """Waits until the log, from offset `since`, contains `text`; returns that part of the log."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            log = self.logtext()[since:]
            if text in log:
                return log
            time.sleep(0.1)
        raise AssertionError(f"gateway never logged {text!r}: {self.logtext()[since:][-3000:]}")

    def logtext(self):
        with open(self.logname, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self):
        """SIGKILL: a crash, as far as the gateway can tell."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError("gateway did not stop within 10 s of SIGTERM")

    def check_sanitizers(self):
        reports = glob.glob(self.asan_prefix + "*")
        text = "".join(open(p, errors="replace").read() for p in reports)
        assert not reports, "sanitizer reports:\n" + text[:8000]


class Lxc:
    """`lxc` 5.0.2 with its own config directory."""

    def __init__(self, conf):
        self.conf = conf

    def run(self, *args, check=True, timeout=CALL_TIMEOUT, input=None):
        env = dict(os.environ, LXD_CONF=self.conf)
        return sh(["lxc", *args], check=check, timeout=timeout, input=input, env=env)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def random_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def volume_dir(node, vol, project="default"):
    return f"{CLUSTER_DIR}/{node}/storage-pools/pool1/custom/{project}_{vol}"


def tree_digest(path):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            h.update(os.path.relpath(p, path).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def make_image(path, payload_size, description="lxd-gateway e2e"):
    """A unified image tarball: metadata.yaml + rootfs with busybox and a random payload."""
    d = os.path.dirname(path)
    meta = os.path.join(d, "metadata.yaml")
    with open(meta, "w") as f:
        f.write(f"architecture: x86_64\ncreation_date: {int(time.time())}\nproperties:\n  description: {description}\n")
    payload = os.path.join(d, "payload")
    random_file(payload, payload_size)
    with tarfile.open(path, "w") as t:
        t.add(meta, "metadata.yaml")
        t.add("/bin/busybox", "rootfs/bin/busybox")
        t.add(payload, "rootfs/payload")
    os.unlink(payload)


def late_heartbeats(gateway, nodes, timeout=40):
    """Makes LXD call `nodes` Offline, as a busy cluster does when the leader's heartbeat round comes late (seen on CI:
    all three members Offline for a round, under two suites' load): their last heartbeat is set in the past, again
    each second (each round, <= 10 s apart, writes it anew), until the gateway's own health view (which reads the
    member list every 10 s) has seen them Offline. The next round then brings them back, up to 10 s later."""
    mark = len(gateway.logtext())
    names = ", ".join(f"'{n}'" for n in nodes)
    deadline = time.time() + timeout
    while time.time() < deadline:
        sh(["env", f"LXD_DIR={CLUSTER_DIR}/node1", "lxd", "sql", "global",
            f"UPDATE nodes SET heartbeat='2000-01-01 00:00:00' WHERE name IN ({names})"])
        log = gateway.logtext()[mark:]
        if all(f'msg="member status" member={n} status=Offline' in log for n in nodes):
            return
        time.sleep(1)
    raise AssertionError(f"the gateway never saw {nodes} Offline: {gateway.logtext()[mark:][-2000:]}")
