#!/usr/bin/env python3
"""Soak test (`make soak`, not part of `make test`): SOAK_MINUTES (default 30) of mixed traffic through two gateway
replicas behind HAProxy, in front of the real 3-member LXD 5.0.2 cluster, while replicas and members are killed
(SIGKILL) and restarted. Run by tests/soak/run.sh inside the cluster's network namespace; nothing leaves loopback.

Traffic, concurrently (5 clients at a time, plus 3 listeners):
  - single-call moves: raw POST .../volumes/custom/<vol>?target=B with source.location A (`lxc query` 5.0.2 and
    `incus query` 6.0.4, through HAProxy), waited on through HAProxy or on the replica that may not own the move
  - volume copies: `lxc storage volume copy` and `incus storage volume copy` (--target A --destination-target B)
    through HAProxy; each copy is checked on the member's disk and deleted again
  - a busybox container (the cluster's `busybox` image): `lxc file push` (1 KiB .. 3 MiB, so both the proxied and the
    libcurl-forwarded upload paths) checked with `lxc exec sha256sum`, `lxc`/`incus exec` with stdin, list calls
  - event listeners that stay open: `lxc monitor ha:`, `incus monitor gw-a:` and `incus monitor gw-b:`
    (--type=operation); one that ends is recorded and started again
  - chaos every SOAK_CHAOS_SECONDS (default: a tenth of the run, 40..180 s), alternating: one replica SIGKILLed and
    restarted 5 s later; one LXD member SIGKILLed (tests/cluster/cluster.sh kill) and restarted 10 s later (start,
    settle)
Every client call runs with a bound (subprocess timeout, 120 s; 240 s for a CLI copy; 160 s for a 100 s operation
wait); one that exceeds it is recorded as a hang, with its command and the last requests its --debug output names.
At the end: every volume exists exactly once (the cluster's database) with its data (digest on the member's disk), no
operation left Running on the gateways or the members, no hang, errors only where they raced a kill (from the kill to
20 s after the replica/member was back) and were clean LXD-style errors (`Error: ...`), no wrong answer with exit
status 0 outside a kill, no listener silent for 180 s, and each replica's RSS and open fds (sampled every 30 s) flat
within each process lifetime (see report_memory). Exit status 1 if any check fails. For the errors that fail the run,
the report shows the replicas' warnings, 5xx access lines and slow or failed backend calls (the replicas run at log
level debug for those) around them, and whether members probed directly (GET /1.0 every 5 s) were slow then.

Environment: SOAK_MINUTES, SOAK_CHAOS_SECONDS, SOAK_SAMPLE_SECONDS, SOAK_WARMUP_SECONDS, SOAK_SEED, SOAK_DIR (work
directory, default /var/tmp/lxdgw-soak: logs and state of the replicas, kept after the run); LXDGW_BINARY, LXDGW_TOP
and the cluster's env file (set by run.sh).
"""
import calendar
import collections
import itertools
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback

TOP = os.environ["LXDGW_TOP"]
sys.path.insert(0, os.path.join(TOP, "tests", "e2e"))

from conftest import member_lxc  # noqa: E402  (the e2e suite's helpers, reused as they are)
from helpers import MiB, random_file, sh, sha256_file, tree_digest, volume_dir  # noqa: E402
from test_copy import fill  # noqa: E402
from test_replicas import HA_ADDR, REPLICAS, Deployment  # noqa: E402

CLUSTER = os.path.join(TOP, "tests", "cluster", "cluster.sh")
CLUSTER_DIR = os.environ["LXDGW_CLUSTER_DIR"]
NODES = ("node1", "node2", "node3")
MINUTES = float(os.environ.get("SOAK_MINUTES") or 30)
DURATION = MINUTES * 60
CHAOS_EVERY = float(os.environ["SOAK_CHAOS_SECONDS"] if os.environ.get("SOAK_CHAOS_SECONDS") else min(180.0, max(40.0, DURATION / 10)))  # 0: no kills
SAMPLE_EVERY = float(os.environ.get("SOAK_SAMPLE_SECONDS") or 30)
WARMUP = float(os.environ.get("SOAK_WARMUP_SECONDS") or (120 if MINUTES >= 10 else 30))
SEED = int(os.environ.get("SOAK_SEED") or int(time.time()))
BASE = os.environ.get("SOAK_DIR") or "/var/tmp/lxdgw-soak"

# bounds well past the gateway's own backend timeouts (30 s a member call): a call that exceeds one never ended
BOUND = 120  # seconds: an ordinary client call (list, exec, file push, POST, delete)
BOUND_COPY = 240  # a CLI volume copy (lxc 5.0.2 does three calls and waits on the transfer)
WAIT_S = 100  # ?timeout= of an operation wait; the call's bound is WAIT_S + 60
SLOW = 20  # seconds: a call that took longer is listed (not a failure)
MOVE_LIMIT = 300  # a move still Running after this long is recorded as a hang
REPLICA_DOWN, MEMBER_DOWN = 5, 10  # seconds a killed replica / member stays dead
GRACE = 20  # seconds after a killed replica/member is back during which an error still counts as racing the kill
STUCK_LISTENER = 180  # seconds without an event outside any kill window: a listener that is stuck
# flat: last-quarter median <= first-quarter median * (1 + RSS_PCT/100) + RSS_KIB, and fds + FD_SLACK (after warm-up,
# within one process lifetime, lifetimes with at least MIN_SAMPLES samples after warm-up)
# (RSS swings by 10-20 MiB with the transfers in flight at the sampling instant, fds by ~10 with open connections)
RSS_PCT, RSS_KIB, FD_SLACK, MIN_SAMPLES = 10, 8192, 10, 8

MOVE_VOLS = {"soak-m0": ("node1", 1), "soak-m1": ("node2", 1), "soak-m2": ("node3", 4), "soak-m3": ("node1", 8),
             "soak-m4": ("node2", 32), "soak-m5": ("node3", 96)}  # name: (first member, MiB of data)
COPY_SRC = {"soak-s0": ("node1", 4), "soak-s1": ("node3", 24)}
CT, CT_NODE = "soak-x1", "node2"

T0 = time.time()
T_STOP = float("inf")  # run time at which the traffic stopped
STOP_TRAFFIC = threading.Event()  # workers, chaos and listeners end
STOP_ALL = threading.Event()  # sampler and watchdog end
LOCK = threading.RLock()


def now():
    return time.time() - T0


def log(msg):
    print(f"[{now():7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# every client call, bounded and recorded

CALLS = collections.Counter()  # label -> calls
ERRORS = []  # {t0, t1, label, cmd, msg, clean, stderr}
HANGS = []  # {t0, label, cmd, bound}
WRONG = []  # {t0, t1, label, cmd, msg}: exit 0 but a wrong answer
SLOWS = []  # {t0, took, label, cmd, rc}: calls that took more than SLOW seconds
PROBES = []  # (t, member, seconds or None, http status): GET /1.0 straight to each member, every 5 s
PROBLEMS = []  # always fatal: wrong data, crashes, a volume lost or duplicated, ...
NOTES = []  # worth reading, not a failure


def problem(msg):
    with LOCK:
        PROBLEMS.append(f"[{now():.1f}s] {msg}")
    log("PROBLEM: " + msg)


def message_lines(stderr):
    """What a client printed on stderr, less its --debug lines."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("time=")]


def clean_error(rc, stderr):
    """An LXD-style error: the client exited non-zero by itself with `Error: ...` (lxc may add ` - <url>: ...` lines
    after it), and no Go panic."""
    lines = message_lines(stderr)
    if rc <= 0 or not lines:
        return False
    if any(ln.startswith(("panic:", "goroutine ", "fatal error:")) for ln in lines):
        return False
    return any(ln.startswith("Error: ") for ln in lines)


def error_message(rc, stderr):
    lines = message_lines(stderr)
    first = next((i for i, ln in enumerate(lines) if ln.startswith("Error: ")), None)
    if first is None:
        return f"exit {rc}, " + (f"last line: {lines[-1]}" if lines else "nothing but --debug lines on stderr")
    return " ".join(ln.strip() for ln in lines[first:])[:600]


def record_error(label, cmd, t0, msg, clean, stderr=""):
    with LOCK:
        ERRORS.append(dict(t0=t0, t1=now(), label=label, cmd=cmd, msg=msg, clean=clean, stderr=stderr[-1500:]))
    log(f"error: {label}: {msg}")


def wrong_answer(label, cmd, t0, msg):
    """A call that exited 0 with a wrong answer. Judged at the end: next to a killed replica it is the client's
    (lxc 5.0.2 reads a cut websocket as the end of the stream), otherwise a failure."""
    with LOCK:
        WRONG.append(dict(t0=t0, t1=now(), label=label, cmd=cmd, msg=msg))
    log(f"wrong answer: {label}: {msg}")


def debug_tail(stderr, n=4):
    """The last requests a client's --debug output names: where a call that hung was waiting."""
    keep = [ln.strip()[:300] for ln in stderr.splitlines()
            if re.search(r"Sending request|Got response|[Cc]onnected|websocket|Error", ln)]
    return keep[-n:]


def record_hang(label, cmd, t0, bound, last=()):
    with LOCK:
        HANGS.append(dict(t0=t0, t1=now(), label=label, cmd=cmd, bound=bound, last=list(last)))
    log(f"HANG: {label}: `{cmd}` still running after its bound of {bound} s (killed)")
    for ln in last:
        log(f"  its last --debug lines: {ln}")


def call(label, argv, timeout=BOUND, input=None, env=None, errors=True):
    """Runs argv with a bound; None if it exceeded it (a hang). A non-zero exit is recorded as an error."""
    t0 = now()
    with LOCK:
        CALLS[label] += 1
    try:
        r = subprocess.run(argv, capture_output=True, text=True, input="" if input is None else input, timeout=timeout,
                           env=env)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        record_hang(label, shlex.join(argv), t0, timeout, debug_tail(err))
        return None
    took = now() - t0
    if took > SLOW and "wait" not in label:
        with LOCK:
            SLOWS.append(dict(t0=t0, took=took, label=label, cmd=shlex.join(argv), rc=r.returncode))
    if r.returncode != 0 and errors:
        msg, clean = error_message(r.returncode, r.stderr), clean_error(r.returncode, r.stderr)
        if " exec" in label and r.returncode == 137 and not message_lines(r.stderr):
            # `exec` exits with the command's status: LXD kills the command of an exec whose websockets broke
            msg, clean = "exit 137: the command in the container was killed (its exec's connection broke)", True
        record_error(label, shlex.join(argv), t0, msg, clean, r.stderr)
    return r


def ok(r):
    return r is not None and r.returncode == 0


class Client:
    """`lxc` 5.0.2 or `incus` 6.0.4 with its own configuration: remotes ha (HAProxy), gw-a and gw-b (the replicas)."""

    def __init__(self, kind, conf):
        self.kind, self.conf = kind, conf
        self.env = dict(os.environ, **({"LXD_CONF": conf} if kind == "lxc" else {"INCUS_CONF": conf}))

    def __call__(self, label, *args, timeout=BOUND, input=None, errors=True):
        # --debug: stderr names each request, so a hang says which one it waited on (stdout is unchanged)
        return call(f"{self.kind} {label}", [self.kind, "--debug", *args], timeout=timeout, input=input, env=self.env,
                    errors=errors)

    def setup(self, *args):
        sh([self.kind, *args], env=self.env, timeout=60)


def admin(node, *args, timeout=30):
    """`lxc` as a member's local admin (unix socket): the cluster's own view, for checks. Bounded like client calls."""
    return call(f"admin {args[0]}", ["env", f"LXD_DIR={CLUSTER_DIR}/{node}", f"LXD_CONF={CLUSTER_DIR}/lxc-conf", "lxc",
                                     *args], timeout=timeout, errors=False)


# ---------------------------------------------------------------------------------------------------------------------
# chaos: which replica / member is down, and when each kill happened

CHAOS = []  # {kind, target, t_kill, t_back, ok, note}
DOWN = set()  # replicas and members killed on purpose and not back yet
LIFE = collections.Counter()  # replica -> process lifetime number (1 = first)


def live_nodes():
    with LOCK:
        return [n for n in NODES if n not in DOWN]


def raced_a_kill(t0, t1):
    with LOCK:
        events = list(CHAOS)
    return any(ev["t_kill"] - 1 <= t1 and t0 <= (ev["t_back"] if ev["t_back"] is not None else now()) + GRACE
               for ev in events)


def kill_replica(dep, name):
    gw, other = dep.replicas[name], dep.replicas[dep.other(name)]
    with LOCK:
        DOWN.add(name)
    pid = gw.proc.pid
    gw.kill()
    log(f"chaos: SIGKILL replica {name} (pid {pid})")
    time.sleep(REPLICA_DOWN)
    since, since_other = len(gw.logtext()), len(other.logtext())
    gw.start()
    gw.wait_log('msg="gateway replica up"', since=since, timeout=60)
    other.wait_log('msg="gateway replica up"', since=since_other, timeout=60)
    with LOCK:
        LIFE[name] += 1
        DOWN.discard(name)
    moves = re.findall(r'msg="found an interrupted move" move=(\S+)', gw.logtext()[since:])
    log(f"chaos: replica {name} back (pid {gw.proc.pid}); its journal had {len(moves)} interrupted move(s)")
    return f"pid {pid} -> {gw.proc.pid}, journal: {len(moves)} interrupted move(s)"


def kill_member(node):
    with LOCK:
        DOWN.add(node)
    sh(["bash", CLUSTER, "kill", node], timeout=30)
    log(f"chaos: SIGKILL member {node}")
    time.sleep(MEMBER_DOWN)
    sh(["bash", CLUSTER, "start", node], timeout=90)
    sh(["bash", CLUSTER, "settle"], timeout=150)
    with LOCK:
        DOWN.discard(node)
    log(f"chaos: member {node} back and the cluster settled")
    return ""


def chaos_loop(dep):
    plan = itertools.cycle([("replica", "gw-a"), ("member", "node1"), ("replica", "gw-b"), ("member", "node2"),
                            ("replica", "gw-a"), ("member", "node3"), ("replica", "gw-b"), ("member", "node1"),
                            ("replica", "gw-a"), ("member", "node2"), ("replica", "gw-b"), ("member", "node3")])
    if CHAOS_EVERY <= 0:
        return
    next_t = CHAOS_EVERY
    while not STOP_TRAFFIC.wait(max(0.0, next_t - now())):
        if now() + 45 > DURATION:  # no kill whose recovery would run past the end of the traffic
            return
        kind, target = next(plan)
        ev = dict(kind=kind, target=target, t_kill=now(), t_back=None, ok=False, note="")
        with LOCK:
            CHAOS.append(ev)
        try:
            ev["note"] = kill_replica(dep, target) if kind == "replica" else kill_member(target)
            ev["ok"] = True
        except Exception as e:  # noqa: BLE001 (reported, and the run fails)
            ev["note"] = f"did not come back: {e}"
            problem(f"chaos: {kind} {target} did not come back: {e}")
        ev["t_back"] = now()
        next_t = max(next_t + CHAOS_EVERY, now() + 20)


# ---------------------------------------------------------------------------------------------------------------------
# volumes: where each is, checked against the cluster's database and the members' disks

class Volumes:
    def __init__(self):
        self.loc, self.digest, self.busy, self.broken = {}, {}, set(), {}

    def take(self):
        with LOCK:
            free = [v for v in self.loc if v not in self.busy and v not in self.broken]
            if not free:
                return None
            v = random.choice(free)
            self.busy.add(v)
            return v

    def give(self, v):
        with LOCK:
            self.busy.discard(v)


VOLS = Volumes()
COPY_DIGEST = {}
LEFT = set()  # copies whose copy or delete failed: looked at in the end


def holders_all():
    """{name: [members]} of every soak- volume, as the cluster's database has them (asked of a live member)."""
    for node in live_nodes() + list(NODES):
        r = admin(node, "query", "/1.0/storage-pools/pool1/volumes/custom?recursion=1")
        if ok(r):
            out = {}
            for v in json.loads(r.stdout):
                if v["name"].startswith("soak-"):
                    out.setdefault(v["name"], []).append(v["location"])
            return out
    return None


def holders(name):
    for _ in range(10):
        h = holders_all()
        if h is not None:
            return sorted(h.get(name, []))
        time.sleep(2)
    raise RuntimeError("no member answers the volume list")


def running_ops(client, remote="ha"):
    """Running operations (not LXD's image download tokens) as a gateway lists them; None if the call failed."""
    t0 = now()
    r = client("operation list", "query", f"{remote}:/1.0/operations?recursion=1", errors=False)
    if not ok(r):
        return None
    try:
        answer = json.loads(r.stdout or "{}") or {}
        return [op for ops in answer.values() for op in ops or []
                if op.get("status") == "Running" and op.get("class") != "token"]
    except (ValueError, AttributeError, TypeError):  # not LXD's {status: [operations]}: another request's answer?
        wrong_answer(f"{client.kind} operation list", f"{client.kind} query {remote}:/1.0/operations?recursion=1", t0,
                     f"answered {r.stdout[:300]!r}")
        return None


def mentions(op, vol):
    return any(str(u).split("?")[0].endswith("/" + vol) for us in (op.get("resources") or {}).values() for u in us or [])


def settle_volume(client, v, why):
    """After a failed move: wait until no operation concerns `v` and exactly one member holds it; then that is where
    it is. A volume that stays on two members (or none) is set aside (broken) and fails the final check."""
    deadline, h, busy = time.time() + 300, None, None
    while time.time() < deadline:
        ops = running_ops(client)
        busy = [op["id"] for op in ops or [] if mentions(op, v)]
        h = holders(v)
        if ops is not None and not busy and len(h) == 1:
            with LOCK:
                VOLS.loc[v] = h[0]
            return
        time.sleep(3)
    with LOCK:
        VOLS.broken[v] = f"after a failed move ({why}): held by {h}, operations running on it: {busy}"
    log(f"volume {v} set aside: {VOLS.broken[v]}")


def move_once(client, v, wait_remote):
    with LOCK:
        src = VOLS.loc[v]
    dst = random.choice([n for n in NODES if n != src])
    body = json.dumps({"name": v, "migration": True, "source": {"location": src}})
    t0 = now()
    r = client("move POST", "query", "--raw", "-X", "POST", "-d", body,
               f"ha:/1.0/storage-pools/pool1/volumes/custom/{v}?target={dst}")
    if not ok(r):
        return settle_volume(client, v, "POST failed")
    answer = json.loads(r.stdout)
    if answer.get("type") == "error":  # `incus query --raw` prints LXD's error envelope and exits 0
        record_error(f"{client.kind} move POST", f"POST move of {v} {src} -> {dst}", t0,
                     f"Error: {answer.get('error')}", True)
        return settle_volume(client, v, "POST refused")
    if answer.get("type") != "async":
        problem(f"move POST of {v} answered {answer}")
        return settle_volume(client, v, "POST not async")
    op_id = answer["metadata"]["id"]
    started = time.time()
    while True:
        t0 = now()
        r = client("move wait", "query", f"{wait_remote}:/1.0/operations/{op_id}/wait?timeout={WAIT_S}",
                   timeout=WAIT_S + 60)
        if not ok(r):
            return settle_volume(client, v, "wait failed")
        op = json.loads(r.stdout)
        if not isinstance(op, dict) or op.get("id") != op_id:  # another request's answer
            wrong_answer(f"{client.kind} move wait", f"wait on {op_id} via {wait_remote}", t0,
                         f"answered {r.stdout[:300]!r}")
            return settle_volume(client, v, "wait answered another operation")
        if op["status"] == "Success":
            break
        if op["status"] != "Running":
            record_error(f"{client.kind} move result", f"operation {op_id} ({v} {src} -> {dst})", t0,
                         f"operation {op['status']}: {op.get('err')}", True)
            return settle_volume(client, v, f"operation {op['status']}")
        if time.time() - started > MOVE_LIMIT:
            record_hang(f"{client.kind} move operation", f"move {op_id} of {v} {src} -> {dst}", t0, MOVE_LIMIT)
            return settle_volume(client, v, "operation never ended")
    h = holders(v)
    if h != [dst]:
        problem(f"move {op_id} of {v} {src} -> {dst} ended in Success, but the cluster holds it on {h}")
        return settle_volume(client, v, "holders after Success")
    got = tree_digest(volume_dir(dst, v))
    if got != VOLS.digest[v]:
        problem(f"move {op_id} of {v} {src} -> {dst}: the data on {dst} differs from what was written")
        with LOCK:
            VOLS.broken[v] = "data differs after a move"
        return
    with LOCK:
        VOLS.loc[v] = dst


def mover(client, wait_remotes):
    while not STOP_TRAFFIC.is_set():
        v = VOLS.take()
        if v is None:
            STOP_TRAFFIC.wait(1)
            continue
        try:
            move_once(client, v, random.choice(wait_remotes))
        except Exception:  # noqa: BLE001
            problem(f"{client.kind} mover: {traceback.format_exc()}")
        finally:
            VOLS.give(v)
        STOP_TRAFFIC.wait(random.uniform(0.5, 2))


def copier(client):
    for seq in itertools.count(1):
        if STOP_TRAFFIC.is_set():
            return
        try:
            src = random.choice(sorted(COPY_SRC))
            a = COPY_SRC[src][0]
            b = random.choice([n for n in NODES if n != a])
            dst = f"{src}-{client.kind[0]}{seq}"
            r = client("volume copy", "storage", "volume", "copy", f"ha:pool1/{src}", f"ha:pool1/{dst}", "--target", a,
                       "--destination-target", b, timeout=BOUND_COPY)
            if not ok(r):
                with LOCK:
                    LEFT.add(dst)
            else:
                h = holders(dst)
                if h != [b]:
                    problem(f"copy {src} ({a}) -> {dst} ({b}) succeeded, but the cluster holds {dst} on {h}")
                elif tree_digest(volume_dir(b, dst)) != COPY_DIGEST[src]:
                    problem(f"copy {src} ({a}) -> {dst} ({b}): the data on {b} differs from the source's")
                r = client("volume delete", "storage", "volume", "delete", "ha:pool1", dst, "--target", b)
                if not ok(r):
                    with LOCK:
                        LEFT.add(dst)
        except Exception:  # noqa: BLE001
            problem(f"{client.kind} copier: {traceback.format_exc()}")
        STOP_TRAFFIC.wait(random.uniform(0.5, 2))


def container_worker(lxc, incus, files):
    reads = [(lxc, "list", ("list", "ha:", "--format", "csv")),
             (incus, "volume list", ("storage", "volume", "list", "ha:pool1", "--format", "csv")),
             (lxc, "operation list", ("operation", "list", "ha:", "--format", "csv")),
             (incus, "cluster list", ("cluster", "list", "ha:", "--format", "csv"))]
    for i in itertools.count(1):
        if STOP_TRAFFIC.is_set():
            return
        try:
            name, path, digest = files[i % len(files)]
            t0 = now()
            if ok(lxc("file push", "file", "push", path, f"ha:{CT}/root/{name}")):
                r = lxc("exec", "exec", f"ha:{CT}", "--", "sha256sum", f"/root/{name}")
                if ok(r) and r.stdout.split()[:1] != [digest]:
                    wrong_answer("lxc file push + exec", f"lxc file push {name}; lxc exec sha256sum", t0,
                                 f"the pushed file reads back as {r.stdout.strip()!r} (exit 0), not {digest}; "
                                 f"stderr {r.stderr.strip()[-300:]!r}")
            c = incus if i % 2 else lxc
            token = f"soak-{i}-{random.getrandbits(32):08x}\n"
            t0 = now()
            r = c("exec stdin", "exec", f"ha:{CT}", "--", "cat", input=token)
            if ok(r) and r.stdout != token:
                wrong_answer(f"{c.kind} exec stdin", f"{c.kind} exec ha:{CT} -- cat", t0,
                             f"answered {r.stdout!r} (exit 0) for {token!r}; stderr {r.stderr.strip()[-300:]!r}")
            c, label, args = reads[i % len(reads)]
            c(label, *args)
        except Exception:  # noqa: BLE001
            problem(f"container worker: {traceback.format_exc()}")
        STOP_TRAFFIC.wait(1)


# ---------------------------------------------------------------------------------------------------------------------
# listeners

class Listener:
    """`<client> monitor <remote>: --type=operation`, kept open; when it ends it is recorded and started again."""

    def __init__(self, client, remote):
        self.client, self.remote = client, remote
        self.name = f"{client.kind} monitor {remote}:"
        self.segments = []  # {t0, t1, events, max_gap, gap_at, rc, msg}
        self.proc = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not STOP_TRAFFIC.is_set():
            argv = [self.client.kind, "monitor", f"{self.remote}:", "--type=operation", "--format=json"]
            with LOCK:
                CALLS[f"{self.client.kind} monitor"] += 1
            seg = dict(t0=now(), t1=None, times=[], rc=None, msg="")
            self.segments.append(seg)
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         env=self.client.env)
            for line in self.proc.stdout:
                if line.startswith("{"):  # a new event (pretty-printed or not, only an event starts at column 0)
                    seg["times"].append(now())
            rc = self.proc.wait()
            err = self.proc.stderr.read()
            seg["t1"], seg["rc"] = now(), rc
            seg["msg"] = error_message(rc, err)
            if STOP_TRAFFIC.is_set():
                break
            record_error(f"{self.client.kind} monitor", shlex.join(argv), seg["t1"], seg["msg"],
                         clean_error(rc, err), err)
            STOP_TRAFFIC.wait(2)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self.thread.join(15)


# ---------------------------------------------------------------------------------------------------------------------
# RSS and fds of each replica; a replica that dies on its own

SAMPLES = []  # (t, {replica: (life, pid, rss_kib, fds) or None})


def proc_sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def sampler(dep):
    next_t = 0.0
    while not STOP_ALL.wait(max(0.0, next_t - now())):
        row = {}
        for name, gw in dep.replicas.items():
            with LOCK:
                life, proc = LIFE[name], gw.proc
            try:
                row[name] = (life, proc.pid, *proc_sample(proc.pid)) if proc.poll() is None else None
            except (OSError, StopIteration):
                row[name] = None
        SAMPLES.append((now(), row))
        next_t += SAMPLE_EVERY


def member_prober():
    """GET /1.0 straight to each member (not through a gateway) every 5 s, timed: whether LXD itself was slow when a
    call through the gateways was."""
    cert, key = os.environ["LXDGW_CLIENT_CERT"], os.environ["LXDGW_CLIENT_KEY"]
    while not STOP_ALL.wait(5):
        for i, n in enumerate(NODES):
            t = now()
            try:
                r = subprocess.run(["curl", "-sk", "--cert", cert, "--key", key, "--max-time", "60", "-o", "/dev/null",
                                    "-w", "%{http_code}", f"https://127.0.0.1{i + 1}:8443/1.0"], capture_output=True,
                                   text=True, timeout=70)
                code = r.stdout.strip()
            except subprocess.TimeoutExpired:
                code = "timeout"
            with LOCK:
                PROBES.append((t, n, now() - t, code))


def slow_members(t0, t1, limit=1.0):
    """Direct probes that started in [t0 - 35, t1] and took more than `limit` seconds or failed, outside kills."""
    with LOCK:
        probes = list(PROBES)
    return [(t, n, d, c) for t, n, d, c in probes
            if t0 - 35 <= t <= t1 and (d > limit or c != "200") and not raced_a_kill(t, t + d)]


def watchdog(dep):
    """A replica or HAProxy that exits when nobody killed it: a crash. The replica is started again."""
    while not STOP_ALL.wait(1):
        for name, gw in dep.replicas.items():
            with LOCK:
                if name in DOWN or gw.proc.poll() is None:
                    continue
                DOWN.add(name)
            rc = gw.proc.returncode
            problem(f"replica {name} (pid {gw.proc.pid}) exited on its own with status {rc}; its log ends:\n"
                    + "\n".join(gw.logtext().splitlines()[-40:]))
            try:
                gw.start()
                with LOCK:
                    LIFE[name] += 1
            except Exception as e:  # noqa: BLE001
                problem(f"replica {name} could not be started again: {e}")
            with LOCK:
                DOWN.discard(name)
        if dep.haproxy.poll() is not None:
            problem(f"HAProxy exited with status {dep.haproxy.returncode}")
            return


# ---------------------------------------------------------------------------------------------------------------------
# set-up

def setup_clients(dep):
    lxc_conf, incus_conf = os.path.join(BASE, "lxc-conf"), os.path.join(BASE, "incus-conf")
    os.makedirs(lxc_conf)
    os.makedirs(incus_conf)
    shutil.copy(os.environ["LXDGW_CLIENT_CERT"], f"{lxc_conf}/client.crt")
    shutil.copy(os.environ["LXDGW_CLIENT_KEY"], f"{lxc_conf}/client.key")
    lxc, incus = Client("lxc", lxc_conf), Client("incus", incus_conf)
    incus.setup("remote", "generate-certificate")
    member_lxc("node1", "config", "trust", "add", f"{incus_conf}/client.crt", "--name", "soak-incus")
    for gw in dep.replicas.values():
        gw.wait_trusted(f"{incus_conf}/client.crt", f"{incus_conf}/client.key")
    for c in (lxc, incus):
        for name, (addr, _) in REPLICAS.items():
            c.setup("remote", "add", name, f"https://{addr}", "--accept-certificate")
        c.setup("remote", "add", "ha", f"https://{HA_ADDR}", "--accept-certificate")
    return lxc, incus


def remove_soak_things():
    """Volumes and the container of an earlier soak on a kept cluster (LXDGW_KEEP_CLUSTER=1)."""
    admin("node1", "delete", "-f", CT, timeout=60)
    for name, nodes in (holders_all() or {}).items():
        for n in nodes:
            admin(n, "storage", "volume", "delete", "pool1", name, "--target", n, timeout=60)


def make_volumes(incus):
    for name, (node, mib) in {**MOVE_VOLS, **COPY_SRC}.items():
        incus.setup("storage", "volume", "create", "ha:pool1", name, "--target", node)
        digest = fill(node, name, size=mib * MiB)
        if name in MOVE_VOLS:
            VOLS.loc[name], VOLS.digest[name] = node, digest
        else:
            COPY_DIGEST[name] = digest


# ---------------------------------------------------------------------------------------------------------------------
# the end: checks and what is printed

def check_operations(lxc):
    """No operation Running, on either gateway (their own moves, merged with LXD's) or on any member. Waits up to
    120 s for stragglers. Returns (ok, lines)."""
    deadline, left = time.time() + 120, []
    while True:
        left = []
        for name in REPLICAS:
            ops = running_ops(lxc, name)
            if ops is None:
                left.append(f"{name}: the operation list could not be read")
            left += [f"{name}: {op['id']} {op['description']} ({op.get('location')})" for op in ops or []]
        for n in NODES:
            r = admin(n, "query", f"/1.0/operations?recursion=1&target={n}")
            if not ok(r):
                left.append(f"{n}: the operation list could not be read")
                continue
            left += [f"{n}: {op['id']} {op['description']} ({op['class']})"
                     for ops in (json.loads(r.stdout or "{}") or {}).values() for op in ops or []
                     if op["status"] == "Running" and op["class"] != "token" and op.get("location") == n]
        if not left or time.time() > deadline:
            return not left, left
        time.sleep(3)


def check_volumes():
    lines, good = [], True
    h = holders_all() or {}
    for name in sorted({**MOVE_VOLS, **COPY_SRC}):
        nodes = sorted(h.get(name, []))
        on_disk = [n for n in NODES if os.path.isdir(volume_dir(n, name))]
        want = VOLS.digest.get(name) or COPY_DIGEST.get(name)
        if len(nodes) != 1:
            good = False
            lines.append(f"  {name}: held by {nodes or 'no member'} (must be exactly one)  FAIL")
            continue
        same = tree_digest(volume_dir(nodes[0], name)) == want
        good = good and same
        extra = [n for n in on_disk if n != nodes[0]]
        note = f"; also a directory on {extra} (not in the database)" if extra else ""
        if extra:
            NOTES.append(f"{name}: a directory of it remains on {extra}, which the cluster's database does not list")
        lines.append(f"  {name}: on {nodes[0]}, data {'intact' if same else 'DIFFERS'}{note}  {'ok' if same else 'FAIL'}")
    dup = {n: m for n, m in h.items() if len(m) > 1 and n not in MOVE_VOLS and n not in COPY_SRC}
    for n, m in sorted(dup.items()):
        good = False
        lines.append(f"  {n}: held by {m} (a copy's name on two members)  FAIL")
    left = sorted(n for n in h if n not in MOVE_VOLS and n not in COPY_SRC)
    with LOCK:
        failed_copies = sorted(LEFT)
    lines.append(f"  copies whose copy or delete call failed: {len(failed_copies)}; of these still in the cluster "
                 f"(removed now): {left or 'none'}")
    for n in left:
        for node in h[n]:
            admin(node, "storage", "volume", "delete", "pool1", n, "--target", node, timeout=60)
    if left:
        NOTES.append(f"copies left behind by failed copy/delete calls: {left}")
    return good, lines


def error_kind(label, msg):
    m = msg[7:] if msg.startswith("Error: ") else msg
    m = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", m)
    m = re.sub(r"\b[0-9a-f]{16,}\b", "<id>", m)
    m = re.sub(r"soak-[a-z0-9-]+", "<vol>", m)
    m = re.sub(r"\d+\.\d+\.\d+\.\d+(:\d+)?", "<addr>", m)
    m = re.sub(r"\bnode[123]\b", "node<N>", m)
    m = re.sub(r"\bgw-[ab]\b", "gw-<X>", m)
    m = re.sub(r"\d+", "<n>", m)
    return f"{label}: {m[:220]}"


def gateway_lines(logs, t0, t1, limit=10):
    """The replicas' warn/error lines, 5xx access lines and backend calls (the gateway's own calls to members, logged
    at level debug) that failed or took over 5 s, between run times t0 and t1 (3 s either side)."""
    lo, hi = T0 + t0 - 3, T0 + t1 + 3
    out = []
    for name, text in logs.items():
        for ln in text.splitlines():
            slow_call = 'msg="backend call"' in ln and (
                float((re.search(r"duration_ms=([0-9.]+)", ln) or [0, "0"])[1]) > 5000 or " err=- " not in ln + " ")
            if (" level=warn " not in ln and " level=error " not in ln and not re.search(r" status=5\d\d ", ln)
                    and not slow_call):
                continue
            m = re.match(r'time="([0-9T:.-]+)Z"', ln)
            if not m:
                continue
            t = calendar.timegm(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + m.group(1)[19:])
            if lo <= t <= hi:
                out.append(f"{name} {ln[:400]}")
    return out[:limit]


def report_wrong(logs):
    """Calls that exited 0 with a wrong answer: next to a kill, the client's doing (reported); else a failure."""
    bad = [w for w in WRONG if not raced_a_kill(w["t0"], w["t1"])]
    print(f"\nwrong answers with exit status 0: {len(WRONG) - len(bad)} next to a kill (reported, not failed: the "
          f"client took a cut websocket for the end of its output), {len(bad)} with nothing killed"
          f"  {'PASS' if not bad else 'FAIL'}")
    for w in WRONG:
        print(f"  [{w['t0']:.1f}..{w['t1']:.1f} s] {'raced a kill' if w not in bad else 'NOTHING KILLED'}: "
              f"{w['label']}: `{w['cmd']}`: {w['msg']}")
        if w in bad:
            for ln in gateway_lines(logs, w["t0"], w["t1"]):
                print(f"      log: {ln}")
    return not bad


def report_errors(logs):
    allowed, bad = collections.Counter(), collections.Counter()
    example = {}
    for e in ERRORS:
        k = error_kind(e["label"], e["msg"])
        raced = raced_a_kill(e["t0"], e["t1"])
        (allowed if raced and e["clean"] else bad)[k] += 1
        example.setdefault(k, e)
        if not (raced and e["clean"]):
            e["why"] = ("not clean" if not e["clean"] else "") + ("" if raced else (" and " if not e["clean"] else "")
                                                               + "raced no kill")
    print(f"\nclient errors: {sum(allowed.values())} allowed (raced a kill, clean LXD-style), "
          f"{sum(bad.values())} NOT allowed")
    for title, counter in (("allowed", allowed), ("NOT allowed", bad)):
        if counter:
            print(f"  {title}, by kind:")
            for k, n in counter.most_common():
                print(f"    {n:5d}  {k}")
    if bad:
        print("  NOT allowed, each (first 30):")
        for e in [e for e in ERRORS if "why" in e][:30]:
            print(f"    [{e['t0']:.1f}..{e['t1']:.1f}s] {e['why']}: `{e['cmd']}`\n      {e['msg']}")
            for ln in debug_tail(e["stderr"], 3):
                print(f"      its last --debug lines: {ln}")
            for ln in gateway_lines(logs, e["t0"], e["t1"]):
                print(f"      log: {ln}")
            for t, n, d, c in slow_members(e["t0"], e["t1"])[:6]:
                print(f"      direct GET /1.0 to {n} at {t:.1f} s: {c} after {d:.1f} s")
    return not bad


def quarters(vals):
    q = max(1, len(vals) // 4)
    return statistics.median(vals[:q]), statistics.median(vals[-q:])


def theil_sen(pts):
    """Median of the pairwise slopes (robust to the spikes of in-flight transfers), per minute."""
    slopes = [(b[1] - a[1]) / (b[0] - a[0]) * 60 for i, a in enumerate(pts) for b in pts[i + 1:] if b[0] > a[0]]
    return statistics.median(slopes) if slopes else 0.0


def report_memory():
    names = list(REPLICAS)
    print("\nreplica RSS and open fds, every %d s (life = process lifetime number; - = not running):" % SAMPLE_EVERY)
    head = "  t_s   " + "".join(f"| {n} life  rss_kib  fds " for n in names)
    print(head)
    for t, row in SAMPLES:
        cells = []
        for n in names:
            s = row.get(n)
            cells.append(f"| {'':4}{s[0]:>4} {s[2]:>8} {s[3]:>4} " if s else f"| {'':4}{'-':>4} {'-':>8} {'-':>4} ")
        print(f"  {t:6.0f} " + "".join(cells))
    good, judged = True, collections.Counter()
    print(f"flat = within one process lifetime, after {WARMUP:.0f} s of warm-up, the median of the last quarter of its "
          f"samples <= the median of the first quarter + {RSS_PCT}% + {RSS_KIB} KiB (RSS), + {FD_SLACK} (fds); "
          f"lifetimes with fewer than {MIN_SAMPLES} samples after warm-up are not judged")
    for n in names:
        lives = collections.OrderedDict()
        for t, row in SAMPLES:
            s = row.get(n)
            if s:
                lives.setdefault((s[0], s[1]), []).append((t, s[2], s[3]))
        for (life, pid), pts in lives.items():
            start = pts[0][0]
            use = [p for p in pts if p[0] - start >= WARMUP]
            span = f"{pts[0][0]:.0f}..{pts[-1][0]:.0f} s"
            if len(use) < MIN_SAMPLES:
                print(f"  {n} life {life} (pid {pid}, {span}): {len(use)} samples after warm-up: not judged")
                continue
            judged[n] += 1
            r0, r1 = quarters([p[1] for p in use])
            f0, f1 = quarters([p[2] for p in use])
            rflat, fflat = r1 <= r0 * (1 + RSS_PCT / 100) + RSS_KIB, f1 <= f0 + FD_SLACK
            good = good and rflat and fflat
            rslope, fslope = theil_sen([(p[0], p[1]) for p in use]), theil_sen([(p[0], p[2]) for p in use])
            minutes = (use[-1][0] - use[0][0]) / 60
            if rslope * minutes > (r0 * RSS_PCT / 100 + RSS_KIB) / 2:
                NOTES.append(f"{n} life {life}: RSS judged flat, but its trend ({rslope:+.0f} KiB/min over "
                             f"{minutes:.0f} min) is more than half the margin: worth a longer soak")
            print(f"  {n} life {life} (pid {pid}, {span}, {len(use)} samples after warm-up): rss {r0:.0f} -> {r1:.0f} KiB "
                  f"({(r1 - r0) / r0 * 100:+.1f}%) {'flat' if rflat else 'GROWING'}; fds {f0:.0f} -> {f1:.0f} "
                  f"{'flat' if fflat else 'GROWING'}  (trend, Theil-Sen: rss {rslope:+.0f} KiB/min, "
                  f"fds {fslope:+.2f}/min)")
    if MINUTES >= 10:
        for n in names:
            if not judged[n]:
                good = False
                print(f"  {n}: no lifetime long enough to judge in a {MINUTES:.0f}-minute run  FAIL")
    return good


def main():
    global T0, T_STOP
    random.seed(SEED)
    if os.path.isdir(BASE):
        shutil.rmtree(BASE)
    os.makedirs(BASE)
    # the replicas run a copy of the binary: a rebuild during the run does not change what a restart starts
    binary = os.path.join(BASE, "lxd-gateway")
    shutil.copy(os.environ["LXDGW_BINARY"], binary)
    os.environ["LXDGW_BINARY"] = binary
    log(f"soak: {MINUTES:g} min, chaos every {CHAOS_EVERY:.0f} s, samples every {SAMPLE_EVERY:.0f} s, seed {SEED}, "
        f"work dir {BASE}, binary sha256 {sha256_file(binary)[:16]}")
    remove_soak_things()
    dep = Deployment(BASE)
    dep.make()
    for gw in dep.replicas.values():  # debug: each backend call (member, status, duration) is logged
        with open(gw.config) as f:
            conf = f.read()
        with open(gw.config, "w") as f:
            f.write(conf.replace("log: {level: info}", "log: {level: debug}"))
    dep.start()
    for name in REPLICAS:
        LIFE[name] = 1
    listeners, threads = [], []
    lxc = incus = None
    failed = []
    try:
        lxc, incus = setup_clients(dep)
        make_volumes(incus)
        sh(["lxc", "launch", "ha:busybox", f"ha:{CT}", "--target", CT_NODE], env=lxc.env, timeout=120)
        files = []
        for name, size in (("f-small", 1024), ("f-1m", MiB), ("f-3m", 3 * MiB)):
            path = os.path.join(BASE, name)
            random_file(path, size)
            files.append((name, path, sha256_file(path)))
        T0 = time.time()  # the run's clock starts with the traffic
        log("set-up done: 2 replicas behind HAProxy, 8 volumes, container " + CT + "; the run's clock (0 s) is "
            + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0)) + " in the replicas' logs")
        for t in (threading.Thread(target=sampler, args=(dep,), daemon=True),
                  threading.Thread(target=watchdog, args=(dep,), daemon=True),
                  threading.Thread(target=member_prober, daemon=True)):
            t.start()
        listeners = [Listener(lxc, "ha"), Listener(incus, "gw-a"), Listener(incus, "gw-b")]
        threads = [threading.Thread(target=mover, args=(lxc, ["ha"]), daemon=True),
                   threading.Thread(target=mover, args=(incus, ["ha", "gw-a", "gw-b"]), daemon=True),
                   threading.Thread(target=copier, args=(lxc,), daemon=True),
                   threading.Thread(target=copier, args=(incus,), daemon=True),
                   threading.Thread(target=container_worker, args=(lxc, incus, files), daemon=True)]
        chaos = threading.Thread(target=chaos_loop, args=(dep,), daemon=True)
        for t in threads + [chaos]:
            t.start()
        while now() < DURATION:
            time.sleep(min(60.0, DURATION - now()))
            with LOCK:
                log(f"progress: {sum(CALLS.values())} calls, {len(ERRORS)} errors, {len(HANGS)} hangs, "
                    f"{len(CHAOS)} kills, {len(PROBLEMS)} problems")
        log("traffic stops; waiting for the calls under way")
        T_STOP = now()
        STOP_TRAFFIC.set()
        for t in threads + [chaos]:
            t.join(MOVE_LIMIT + 360)
            if t.is_alive():
                problem(f"a worker ({t.name}) did not finish within {MOVE_LIMIT + 360} s after the end")
        for li in listeners:
            li.stop()
        if any(gw.proc.poll() is not None for gw in dep.replicas.values()):
            problem("a replica is not running at the end")
        sh(["bash", CLUSTER, "settle"], timeout=150)
        time.sleep(SAMPLE_EVERY)  # one more sample at rest

        # ------------------------------------------------------------------------------------------ checks
        print("\n==================== soak result ====================")
        print(f"duration {MINUTES:g} min, seed {SEED}, work dir {BASE} (replica logs: {BASE}/gw-a/gw-a.log, "
              f"{BASE}/gw-b/gw-b.log)")
        print(f"client calls: {sum(v for k, v in CALLS.items() if not k.startswith('admin'))} through the gateways, "
              f"{sum(v for k, v in CALLS.items() if k.startswith('admin'))} direct to members (checks)")
        print("  " + ", ".join(f"{k} {v}" for k, v in sorted(CALLS.items())))
        print(f"\nkills: {sum(1 for e in CHAOS if e['kind'] == 'replica')} replica, "
              f"{sum(1 for e in CHAOS if e['kind'] == 'member')} member")
        for e in CHAOS:
            back = f"back at {e['t_back']:.0f} s" if e["t_back"] is not None else "not back"
            print(f"  {e['t_kill']:6.0f} s  SIGKILL {e['kind']} {e['target']}, {back}  {e['note']}")
        if not all(e["ok"] for e in CHAOS):
            failed.append("a killed replica or member did not come back")

        logs = {n: gw.logtext() for n, gw in dep.replicas.items()}
        ok_ops, left = check_operations(lxc)
        print(f"\noperations left Running (gateways and members, LXD's image tokens aside): {len(left)}"
              f"  {'PASS' if ok_ops else 'FAIL'}")
        for ln in left:
            print("  " + ln)
        if not ok_ops:
            failed.append("operations left Running")

        print("\nvolumes (the cluster's database, data checked on the member's disk):")
        with LOCK:
            broken = dict(VOLS.broken)
        for v, why in sorted(broken.items()):
            print(f"  {v} was set aside during the run: {why}")
        ok_vols, lines = check_volumes()
        for ln in lines:
            print(ln)
        print(f"  every volume exactly once with its data: {'PASS' if ok_vols else 'FAIL'}")
        if not ok_vols:
            failed.append("a volume lost, duplicated or changed")

        print(f"\nclient calls that waited past their bound (hangs): {len(HANGS)}  {'PASS' if not HANGS else 'FAIL'}")
        for h in HANGS:
            print(f"  [{h['t0']:.1f} s] {h['label']} (bound {h['bound']} s): `{h['cmd']}`")
            for ln in h.get("last", []):
                print(f"      its last --debug lines: {ln}")
            for ln in gateway_lines(logs, h["t0"], h["t1"]):
                print(f"      log: {ln}")
            for t, n, d, c in slow_members(h["t0"], h["t1"])[:6]:
                print(f"      direct GET /1.0 to {n} at {t:.1f} s: {c} after {d:.1f} s")
        if HANGS:
            failed.append("hangs")

        if not report_errors(logs):
            failed.append("errors that raced no kill or were not clean")
        if not report_wrong(logs):
            failed.append("wrong answers with nothing killed")

        with LOCK:
            probes, slows = list(PROBES), list(SLOWS)
        sp = [p for p in probes if (p[2] > 2 or p[3] != "200") and not raced_a_kill(p[0], p[0] + p[2])]
        print(f"\nmembers probed directly (GET /1.0 every 5 s, not through a gateway): {len(probes)} probes, "
              f"{len(sp)} slower than 2 s or failed outside kill windows")
        for t, n, d, c in sp[:20]:
            print(f"  {t:7.1f} s {n}: {c} after {d:.1f} s")
        print(f"calls that took more than {SLOW} s (operation waits aside; not a failure by itself): {len(slows)}")
        for c in slows[:30]:
            print(f"  [{c['t0']:.1f} s] {c['took']:.1f} s, exit {c['rc']}"
                  f"{', raced a kill' if raced_a_kill(c['t0'], c['t0'] + c['took']) else ''}: {c['label']}: `{c['cmd']}`")

        print("\nlisteners (each kept open; a new segment after it ended):")
        for li in listeners:
            for s in li.segments:
                t1 = s["t1"] if s["t1"] is not None else now()
                end = "open at the end" if s is li.segments[-1] and (s["t1"] is None or s["t1"] >= T_STOP) else f"ended: {s['msg']}"
                upto = min(t1, T_STOP)  # silences are judged while the traffic ran
                pts = [s["t0"]] + [t for t in s["times"] if t <= upto] + [upto]
                gap, gap_at = max(((b - a, a) for a, b in zip(pts, pts[1:])), default=(0.0, s["t0"]))
                print(f"  {li.name} {s['t0']:6.0f}..{t1:6.0f} s: {len(s['times'])} events, longest silence while "
                      f"traffic ran {gap:.0f} s (from {gap_at:.0f} s); {end}")
                if gap > STUCK_LISTENER and not raced_a_kill(gap_at, gap_at + gap):
                    failed.append(f"{li.name} received nothing for {gap:.0f} s")
                    print(f"    FAIL: silent for {gap:.0f} s while traffic went on and nothing was killed")
                if upto - s["t0"] > 60 and not s["times"]:
                    failed.append(f"{li.name} received no event in {t1 - s['t0']:.0f} s")
                    print("    FAIL: no event at all")

        flat = report_memory()
        print(f"RSS and fds flat: {'PASS' if flat else 'FAIL'}")
        if not flat:
            failed.append("RSS or fds growing")

        for n, text in logs.items():
            errs = [ln for ln in text.splitlines() if "level=error" in ln]
            found = text.count('msg="found an interrupted move"')
            print(f"\n{n} log: {len(errs)} error lines, {found} interrupted moves found at restarts")
            for ln in errs[:10]:
                print("  " + ln[:300])
    except Exception:  # noqa: BLE001
        problem("the soak itself failed: " + traceback.format_exc())
    finally:
        STOP_TRAFFIC.set()
        for li in listeners:
            li.stop()
        STOP_ALL.set()
        if lxc is not None:
            admin(CT_NODE, "delete", "-f", CT, timeout=60)
        for name, nodes in (holders_all() or {}).items():
            for n in nodes:
                admin(n, "storage", "volume", "delete", "pool1", name, "--target", n, timeout=60)
        if incus is not None:
            fp = sh(["openssl", "x509", "-in", f"{incus.conf}/client.crt", "-noout", "-fingerprint", "-sha256"]).stdout
            member_lxc("node1", "config", "trust", "remove", fp.split("=")[1].strip().replace(":", "").lower()[:12],
                       check=False)
        try:
            dep.stop()
        except Exception as e:  # noqa: BLE001
            problem(f"stopping the deployment: {e}")

    if NOTES:
        print("\nnotes:")
        for n in NOTES:
            print("  " + n)
    if PROBLEMS:
        failed.append("problems")
        print("\nproblems:")
        for p in PROBLEMS:
            print("  " + p)
    print(f"\nSOAK {'FAILED: ' + '; '.join(failed) if failed else 'PASSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
