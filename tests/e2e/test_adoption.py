"""Issue 16: any replica finishes any move. The state of every move and snapshot copy lives in the cluster's own
database (a profile `flow-<operation id>-<epoch>` in project lxd-gateway, gateway/flows.h); when the replica that runs
one is gone past its lease (cluster.flow_lease), another replica of the same deployment adopts it and finishes it or
rolls it back by the rules of recovery, under the same operation id, on the real LXD 5.0.2 cluster.

Replicas here list each other in `peers`, run with a short lease and stand behind HAProxy (TLS passthrough,
round-robin), as in test_replicas.py. A replica that took a flow is frozen at a step by LXDGW_TEST_PAUSE_AT=<step> and
SIGKILLed; it is never started again while the test waits for the others. Checked each time: the adoption is logged
within the lease plus 15 s and the flow ends; the operation id answers its final state through HAProxy; every volume
exists exactly once with its data; no `flow-*` profile and no `user.lxd-gateway.move` mark is left. A replica that
comes back after its flow was adopted and ended leaves it alone.

The race (three replicas) is forced with LXDGW_TEST_ADOPT_BARRIER=<file>: a replica that decided to adopt waits for the
file before it tries to create its claim, so both contenders try at once."""
import concurrent.futures
import json
import os
import re
import subprocess
import time

import pytest

from conftest import member_lxc
from helpers import MiB, curl, sh, tree_digest, volume_dir
from test_copy import fill, snapshot_dir, volumes
from test_move import NODES, everywhere, where
from test_move_safety import log_mark
from test_replicas import fingerprint, haproxy_config, make_replicas

LEASE = 6  # s: cluster.flow_lease of every replica here
ADOPT_WITHIN = LEASE + 15  # s from the kill: the adoption is logged and the flow has ended
FLOWS_PROJECT = "lxd-gateway"
MARK = "user.lxd-gateway.move"
TEMP = "lxd-gateway-snapshot-copy-"
PREFIX = "ad-"  # every volume these tests make

PAIR_HA = "127.0.0.1:8460"
PAIR = {"ad-a": ("127.0.0.1:8461", "127.0.0.1:9461"), "ad-b": ("127.0.0.1:8462", "127.0.0.1:9462")}
TRIO_HA = "127.0.0.1:8464"
TRIO = {"ad-x": ("127.0.0.1:8465", "127.0.0.1:9465"), "ad-y": ("127.0.0.1:8466", "127.0.0.1:9466"),
        "ad-z": ("127.0.0.1:8467", "127.0.0.1:9467")}


class Deployment:
    """Replicas of one deployment (each listing all of them in `peers`, cluster.flow_lease = LEASE), sharing one server
    certificate, each with its own identity and state_dir, and HAProxy in front of them."""

    def __init__(self, base, replicas, ha_addr):
        self.base, self.addrs, self.ha_addr = base, replicas, ha_addr
        self.replicas, self.fps, self.envs = {}, {}, {}
        self.haproxy = None
        self.ha = f"https://{ha_addr}"

    def make(self):
        self.replicas = make_replicas(self.base, self.addrs, False, ha_addr=self.ha_addr,
                                      cluster_keys=f"  flow_lease: {LEASE}s\n")
        self.fps = {name: fingerprint(f"{gw.state}/identity.crt") for name, gw in self.replicas.items()}

    def start(self, name, extra_env=None):
        """Starts replica `name` (with `extra_env`: test hooks) and waits until it found every other running replica."""
        gw = self.replicas[name]
        others = [n for n in self.running() if n != name]
        mark = log_mark(gw)
        gw.start(extra_env)
        self.envs[name] = dict(extra_env or {})
        for other in others:
            gw.wait_log(f'msg="gateway replica up" peer={other} ', since=mark, timeout=20)
        gw.wait_trusted(os.environ["LXDGW_CLIENT_CERT"], os.environ["LXDGW_CLIENT_KEY"])
        time.sleep(1)  # the members' first probes (the plugins step aside until then)

    def start_all(self, envs=None):
        envs = envs or {}
        for name, gw in self.replicas.items():
            gw.start(envs.get(name))
            self.envs[name] = dict(envs.get(name) or {})
        for name, gw in self.replicas.items():
            for other in self.replicas:
                if other != name:
                    gw.wait_log(f'msg="gateway replica up" peer={other} ', timeout=20)
            gw.wait_trusted(os.environ["LXDGW_CLIENT_CERT"], os.environ["LXDGW_CLIENT_KEY"])
        time.sleep(1)
        cfg = os.path.join(self.base, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(haproxy_config(self.ha_addr, self.addrs))
        self.haproxy = subprocess.Popen(["haproxy", "-f", cfg, "-db"], stdout=open(os.path.join(self.base, "haproxy.log"), "ab"),
                                        stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while sh(["curl", "-sk", "--max-time", "2", f"{self.ha}/1.0"], check=False).returncode != 0:
            assert time.time() < deadline and self.haproxy.poll() is None, "HAProxy did not come up"
            time.sleep(0.2)

    def running(self):
        return [n for n, gw in self.replicas.items() if gw.proc is not None and gw.proc.poll() is None]

    def kill(self, name):
        self.replicas[name].kill()
        return time.time()

    def restart(self, name, extra_env=None):
        """Kills replica `name` (it may be frozen by a hook) and starts it again without its journal: a move an earlier
        test left in it is not recovered in the middle of this one."""
        gw = self.replicas[name]
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()
        journal = os.path.join(gw.state, "moves.journal")
        if os.path.exists(journal):
            os.unlink(journal)
        self.start(name, extra_env)

    def heal(self):
        """After a test: every replica running again, without test hooks, and without the journal of a replica that
        was killed (what it held was adopted, or the test failed: either way it must not be recovered in the middle
        of the next test, whose volumes have the same names)."""
        for name, gw in self.replicas.items():
            if gw.proc is not None and gw.proc.poll() is None and not self.envs.get(name):
                continue
            if gw.proc is not None and gw.proc.poll() is None:
                gw.kill()
            journal = os.path.join(gw.state, "moves.journal")
            if os.path.exists(journal):
                os.unlink(journal)
        for name in self.replicas:
            if name not in self.running():
                self.start(name)

    def stop(self):
        if self.haproxy is not None:
            self.haproxy.terminate()
            self.haproxy.wait(10)
        for name, gw in self.replicas.items():
            if gw.proc is not None and gw.proc.poll() is None:
                if self.envs.get(name):  # (a hook may have frozen it)
                    gw.kill()
                else:
                    gw.stop()
        for name, gw in self.replicas.items():
            member_lxc("node1", "config", "trust", "remove", self.fps[name][:12], check=False)
            gw.check_sanitizers()


# ---- what the cluster holds ----

def flow_profiles():
    """The profiles of project lxd-gateway, as the cluster's own admin sees them."""
    r = member_lxc("node1", "query", f"/1.0/profiles?project={FLOWS_PROJECT}", check=False)
    assert r.returncode == 0, f"project {FLOWS_PROJECT} cannot be read: {r.stdout} {r.stderr}"
    return [u.split("?")[0].rsplit("/", 1)[1] for u in json.loads(r.stdout)]


def assert_no_flow_left(timeout=15):
    """No `flow-*` or `lock-*` profile in project lxd-gateway (a flow's record and its source's lock are deleted right
    after the flow ends: waited for); the project and its default profile stay."""
    deadline = time.time() + timeout
    while True:
        names = flow_profiles()
        left = [n for n in names if n.startswith("flow-") or n.startswith("lock-")]  # (a move's lock on its source too)
        if not left:
            break
        assert time.time() < deadline, f"flow records left in project {FLOWS_PROJECT} {timeout} s after the flows ended: {names}"
        time.sleep(0.5)
    assert "default" in names, names


def drop_flow_profiles():
    for name in flow_profiles():
        if name.startswith("flow-") or name.startswith("lock-"):
            member_lxc("node1", "profile", "delete", name, "--project", FLOWS_PROJECT, check=False)


def assert_no_marks():
    marked = {(n, v): cfg[MARK] for n in NODES for v, (cfg, _) in volumes(n).items() if MARK in cfg}
    assert not marked, f"volumes still carrying {MARK}: {marked}"


def temporaries():
    return {n: [v for v in volumes(n) if v.startswith(TEMP)] for n in NODES}


def drop_volumes():
    for n in NODES:
        for name in volumes(n):
            if name.startswith(PREFIX) or name.startswith(TEMP):
                member_lxc(n, "storage", "volume", "delete", "pool1", name, "--target", n, check=False)


def source(name, size=4 * MiB):
    """Volume `name` on node1 with data, snapshot s0 and a user key; returns its digests."""
    member_lxc("node1", "storage", "volume", "create", "pool1", name, "--target", "node1")
    first = fill("node1", name)
    member_lxc("node1", "storage", "volume", "snapshot", "pool1", name, "s0", "--target", "node1")
    member_lxc("node1", "storage", "volume", "set", "pool1", name, "user.owner=e2e", "--target", "node1")
    now = fill("node1", name, size=size) if size != 4 * MiB else first
    return {"now": now, "s0": first}


def assert_once_with_data(name, node, digests):
    """`name` exists on `node` only, with its data, its snapshot and its config, unmarked."""
    assert where(name) == [node], f"{name} is on {where(name)}, expected only on {node}: {everywhere()}"
    assert tree_digest(volume_dir(node, name)) == digests["now"], f"{name} on {node}: its data changed"
    assert tree_digest(snapshot_dir(node, name, "s0")) == digests["s0"], f"{name}/s0 on {node}: its data changed"
    assert volumes(node)[name][0] == {"user.owner": "e2e"}, f"{name} on {node}: config {volumes(node)[name]}"


# ---- the replicas' logs ----

def wait_re(gw, pattern, since, deadline, what):
    """Waits until the log of `gw` from offset `since` matches `pattern`, until time `deadline`; returns the match."""
    while True:
        m = re.search(pattern, gw.logtext()[since:])
        if m:
            return m
        if time.time() > deadline:
            raise AssertionError(f"{what}: not logged by {os.path.basename(gw.logname)} within the time allowed; "
                                 f"its log:\n{gw.logtext()[since:][-4000:]}")
        time.sleep(0.2)


def adopted_pattern(flow_id):
    return rf'msg="flow adopted" flow={re.escape(flow_id)} kind=(\S+) from=(\S+) epoch=(\d+)'


def ended_pattern(flow_id):
    return rf'msg="(volume move|snapshot copy) ended" move={re.escape(flow_id)} outcome=(\S+)'


def op_wait(url, op_id, timeout=30):
    """GET /1.0/operations/<id>/wait on `url`: (http status, body)."""
    return curl(f"{url}/1.0/operations/{op_id}/wait?timeout={timeout}", os.environ["LXDGW_CLIENT_CERT"],
                os.environ["LXDGW_CLIENT_KEY"], timeout=timeout + 10)


WAITERS = concurrent.futures.ThreadPoolExecutor(max_workers=12)


def start_waits(dep, op_id):
    """Clients waiting on operation `op_id` from now on: GET /1.0/operations/<id>/wait through HAProxy and on every
    running replica directly (round-robin would otherwise ask a random one). Started once the flow is adopted, while
    its operation runs: like LXD, the gateway forgets an operation GW_OP_KEEP_MS (5 s) after it ended."""
    waits = {"haproxy": WAITERS.submit(op_wait, dep.ha, op_id)}
    for name in dep.running():
        waits[name] = WAITERS.submit(op_wait, dep.replicas[name].url, op_id)
    return waits


def op_final(op_id, waits):
    """The operation's final state as every wait of start_waits answered it: all must answer it, the same."""
    answers = {k: f.result(timeout=60) for k, f in waits.items()}
    seen = {k: (code, body.get("metadata", {}).get("status") if isinstance(body, dict) and body.get("metadata") else body)
            for k, (code, body) in answers.items()}
    ok = all(code == 200 and isinstance(body, dict) and body.get("type") == "sync" for code, body in answers.values())
    assert ok, f"wait for {op_id} (through HAProxy, and on each running replica): {seen}"
    statuses = {body["metadata"]["status"] for _, body in answers.values()}
    assert len(statuses) == 1, f"the replicas answer {op_id} differently: {seen}"
    assert all(body["metadata"]["id"] == op_id for _, body in answers.values()), answers
    return answers["haproxy"][1]["metadata"]


def post(url, path, body):
    return curl(f"{url}{path}", os.environ["LXDGW_CLIENT_CERT"], os.environ["LXDGW_CLIENT_KEY"], method="POST", data=body)


def post_move(gw, name, target="node2"):
    code, body = post(gw.url, f"/1.0/storage-pools/pool1/volumes/custom/{name}?target={target}",
                      {"name": name, "migration": True, "source": {"location": "node1"}})
    assert code == 202, f"move of {name} answered {code}: {body}"
    return body["metadata"]["id"]


def journal_steps(gw, op_id):
    path = os.path.join(gw.state, "moves.journal")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(ln).get("step") for ln in f if ln.strip() and json.loads(ln).get("move") == op_id]


def adopted_by(dep, gw, op_id, since, killed_at, kind="move", owner=None):
    """`gw` logs the adoption of `op_id` and its end, both within ADOPT_WITHIN s of `killed_at`; returns (outcome,
    seconds to adoption, seconds to the end, the waits started on the operation once it was adopted)."""
    deadline = killed_at + ADOPT_WITHIN
    m = wait_re(gw, adopted_pattern(op_id), since, deadline, f"flow adopted flow={op_id}")
    took = time.time() - killed_at
    waits = start_waits(dep, op_id)
    assert m.group(1) == kind, f"adopted as kind={m.group(1)}, expected {kind}: {m.group(0)}"
    assert owner is None or m.group(2) == owner, f"adopted from={m.group(2)}, expected the dead owner {owner}: {m.group(0)}"
    assert int(m.group(3)) >= 1, m.group(0)
    e = wait_re(gw, ended_pattern(op_id), since, deadline, f"the end of {op_id} after its adoption")
    return e.group(2), took, time.time() - killed_at, waits


# ---- fixtures ----

@pytest.fixture(scope="module")
def pair_deployment(tmp_path_factory):
    d = Deployment(str(tmp_path_factory.mktemp("adoption-pair")), PAIR, PAIR_HA)
    d.make()
    try:
        d.start_all()
        yield d
    finally:
        d.stop()


@pytest.fixture
def pair(pair_deployment):
    drop_volumes()
    yield pair_deployment
    drop_flow_profiles()  # (what a failed test left: first, so that no replica takes it up again)
    pair_deployment.heal()
    drop_volumes()


# ---- a: the owner killed at each step of a move, never restarted ----

# step the owner recorded before it died -> what the adopter makes of it, and the operation's final status
STEPS = {
    "begin": ("rolled-back", ("Failure",)),         # nothing on the target yet: the move is undone
    "transferring": ("rolled-back", ("Failure",)),  # the transfer was cut: what the target kept is removed
    "transferred": ("moved", ("Success",)),         # the target is complete: the source goes, the mark comes off
    "rolling-back": ("rolled-back", ("Cancelled", "Failure")),  # cancelled by the client: the roll-back is finished
}


@pytest.mark.parametrize("step", list(STEPS))
def test_owner_killed_for_good_the_other_replica_ends_the_move(pair, step):
    a, b = pair.replicas["ad-a"], pair.replicas["ad-b"]
    name = f"{PREFIX}{step}"
    digests = source(name, size=256 * MiB if step == "rolling-back" else 4 * MiB)
    pair.restart("ad-a", {"LXDGW_TEST_PAUSE_AT": step})
    mark_a, mark_b = log_mark(a), log_mark(b)
    op_id = post_move(a, name)
    if step == "rolling-back":  # cancelled once the transfer runs: the roll-back is what the owner then records
        deadline = time.time() + 60
        while "transferring" not in journal_steps(a, op_id):
            assert time.time() < deadline, f"the move never reached transferring: {journal_steps(a, op_id)}"
            time.sleep(0.1)
        code, body = curl(f"{a.url}/1.0/operations/{op_id}", os.environ["LXDGW_CLIENT_CERT"],
                          os.environ["LXDGW_CLIENT_KEY"], method="DELETE")
        assert code == 200, f"cancel answered {code}: {body}"
    a.wait_log(f'msg="paused for a test" step={step}', mark_a, timeout=120)
    assert f"flow-{op_id}-" in " ".join(flow_profiles()), \
        f"the owner paused after recording {step}, yet the cluster holds no flow-{op_id}-*: {flow_profiles()}"
    killed_at = pair.kill("ad-a")

    outcome, adopt_s, end_s, waits = adopted_by(pair, b, op_id, mark_b, killed_at, owner=op_id[:8])
    print(f"{step}: adopted {adopt_s:.1f} s after the kill, ended ({outcome}) after {end_s:.1f} s")
    assert outcome == STEPS[step][0], f"adopted at {step}: outcome {outcome}, expected {STEPS[step][0]}"
    op = op_final(op_id, waits)
    print(f"{step}: the operation answers {op['status']} {op['err']!r}")
    assert op["status"] in STEPS[step][1], f"after the adoption: {op}"
    assert_once_with_data(name, "node2" if outcome == "moved" else "node1", digests)
    assert_no_marks()
    assert_no_flow_left()
    assert a.proc.poll() is not None, "the owner was never started again"


# ---- the owner comes back after its flow was adopted and ended: it touches nothing of it ----

def test_owner_back_after_the_adoption_leaves_the_flow_alone(pair):
    """The owner dies at "transferred"; the other replica finishes the move. When the owner starts again (its journal
    still holds the move unfinished), it must not take the move up again: nothing of it in its log, no operation of
    that id on it, the volumes as the adopter left them."""
    a, b = pair.replicas["ad-a"], pair.replicas["ad-b"]
    name = f"{PREFIX}back"
    digests = source(name)
    pair.restart("ad-a", {"LXDGW_TEST_PAUSE_AT": "transferred"})
    mark_a, mark_b = log_mark(a), log_mark(b)
    op_id = post_move(a, name)
    a.wait_log('msg="paused for a test" step=transferred', mark_a, timeout=120)
    killed_at = pair.kill("ad-a")
    outcome, _, _, waits = adopted_by(pair, b, op_id, mark_b, killed_at, owner=op_id[:8])
    assert outcome == "moved", outcome
    assert op_final(op_id, waits)["status"] == "Success"
    assert_no_flow_left()
    after = everywhere()
    assert "transferred" in journal_steps(a, op_id) and "end" not in journal_steps(a, op_id), journal_steps(a, op_id)

    mark_a = log_mark(a)
    pair.start("ad-a")  # no hook, its journal as it was when it died
    time.sleep(LEASE + 2)  # past a whole lease, and past the flows a start adopts at once
    log = a.logtext()[mark_a:]
    touched = [ln for ln in log.splitlines() if op_id in ln and " msg=" in ln]
    assert not touched, f"the owner, back after its move was adopted and ended, took it up again: {touched}"
    assert everywhere() == after, f"volumes changed after the owner came back: {after} -> {everywhere()}"
    assert_once_with_data(name, "node2", digests)
    assert_no_flow_left()


# ---- b: both replicas killed mid-move, one restarted ----

def test_both_killed_one_restarted_adopts_every_flow(pair):
    """One move started on each replica; both replicas killed (A after "transferred", B after "transferring"); only B
    starts again: it ends its own move and adopts A's (whose id it knows from before: A never answers again)."""
    a, b = pair.replicas["ad-a"], pair.replicas["ad-b"]
    da, db = source(f"{PREFIX}both-a"), source(f"{PREFIX}both-b")
    pair.restart("ad-a", {"LXDGW_TEST_PAUSE_AT": "transferred"})
    pair.restart("ad-b", {"LXDGW_TEST_PAUSE_AT": "transferring"})
    mark_a, mark_b = log_mark(a), log_mark(b)
    op_a, op_b = post_move(a, f"{PREFIX}both-a"), post_move(b, f"{PREFIX}both-b")
    a.wait_log('msg="paused for a test" step=transferred', mark_a, timeout=120)
    b.wait_log('msg="paused for a test" step=transferring', mark_b, timeout=120)
    pair.kill("ad-a")
    pair.kill("ad-b")
    held = [n for n in flow_profiles() if n.startswith(f"flow-{op_a}-") or n.startswith(f"flow-{op_b}-")]
    assert len(held) == 2, f"both moves are recorded in the cluster: {flow_profiles()}"

    mark_b = log_mark(b)
    pair.start("ad-b")  # no hook, its journal as it was; A stays dead
    started = time.time()
    deadline = started + ADOPT_WITHIN
    m = wait_re(b, adopted_pattern(op_b), mark_b, deadline, f"B taking up its own move {op_b} again")
    waits = {op_b: start_waits(pair, op_b)}
    assert m.group(2) == op_b[:8], f"B's own move adopted from {m.group(2)}: {m.group(0)}"
    m = wait_re(b, adopted_pattern(op_a), mark_b, deadline, f"adoption of A's move {op_a}")
    waits[op_a] = start_waits(pair, op_a)
    assert m.group(2) == op_a[:8], f"A's move adopted from {m.group(2)}: {m.group(0)}"
    ends = {}
    for op_id in (op_a, op_b):
        e = wait_re(b, ended_pattern(op_id), mark_b, deadline, f"the end of {op_id}")
        ends[op_id] = e.group(2)
    print(f"restarted B ended both moves within {time.time() - started:.1f} s of its start: {ends}")
    assert ends == {op_a: "moved", op_b: "rolled-back"}, ends
    finals = {op_id: op_final(op_id, waits[op_id]) for op_id in (op_a, op_b)}
    assert finals[op_a]["status"] == "Success" and finals[op_b]["status"] == "Failure", finals
    assert_once_with_data(f"{PREFIX}both-a", "node2", da)
    assert_once_with_data(f"{PREFIX}both-b", "node1", db)
    assert_no_marks()
    assert_no_flow_left()


# ---- d: a snapshot copy adopted ----

@pytest.mark.parametrize("step,outcome", [("temp-copying", "rolled-back"), ("transferred", "copied")])
def test_snapshot_copy_adopted_leaves_no_temporary_volume(pair, step, outcome):
    a, b = pair.replicas["ad-a"], pair.replicas["ad-b"]
    digests = source(f"{PREFIX}sc")
    pair.restart("ad-a", {"LXDGW_TEST_PAUSE_AT": step})
    mark_a, mark_b = log_mark(a), log_mark(b)
    code, body = post(a.url, "/1.0/storage-pools/pool1/volumes/custom?target=node2",
                      {"name": f"{PREFIX}sc2", "type": "custom",
                       "source": {"type": "copy", "name": f"{PREFIX}sc/s0", "pool": "pool1", "location": "node1"}})
    assert code == 202, f"snapshot copy answered {code}: {body}"
    op_id = body["metadata"]["id"]
    a.wait_log(f'msg="paused for a test" step={step}', mark_a, timeout=120)
    killed_at = pair.kill("ad-a")
    got, adopt_s, end_s, waits = adopted_by(pair, b, op_id, mark_b, killed_at, kind="move", owner=op_id[:8])
    print(f"snapshot copy at {step}: adopted {adopt_s:.1f} s after the kill, ended ({got}) after {end_s:.1f} s")
    assert got == outcome, f"adopted at {step}: outcome {got}, expected {outcome}"
    op = op_final(op_id, waits)
    assert op["status"] == ("Success" if outcome == "copied" else "Failure"), op
    assert temporaries() == {n: [] for n in NODES}, f"temporary volumes left: {temporaries()}"
    assert_once_with_data(f"{PREFIX}sc", "node1", digests)  # the source, untouched
    if outcome == "copied":
        assert where(f"{PREFIX}sc2") == ["node2"], everywhere()
        assert tree_digest(volume_dir("node2", f"{PREFIX}sc2")) == digests["s0"]
    else:
        assert where(f"{PREFIX}sc2") == [], everywhere()
    assert_no_marks()
    assert_no_flow_left()


# ---- c: two replicas race to adopt the same flow ----

@pytest.fixture
def trio(tmp_path_factory, pair):
    """Three replicas X, Y, Z (all peers of each other, not of the pair, which keeps running beside them): X with the
    pause hook at "transferring", Y and Z held before they claim an adoption until the barrier file exists."""
    base = str(tmp_path_factory.mktemp("adoption-trio"))
    barrier = os.path.join(base, "barrier")
    d = Deployment(base, TRIO, TRIO_HA)
    d.make()
    d.barrier = barrier
    try:
        d.start_all({"ad-x": {"LXDGW_TEST_PAUSE_AT": "transferring"}, "ad-y": {"LXDGW_TEST_ADOPT_BARRIER": barrier},
                     "ad-z": {"LXDGW_TEST_ADOPT_BARRIER": barrier}})
        yield d
    finally:
        with open(barrier, "w"):
            pass  # (a failed test must not leave replicas waiting)
        for gw in d.replicas.values():
            if gw.proc is not None and gw.proc.poll() is None:
                gw.kill()
        d.envs = {}
        d.stop()


def test_two_replicas_race_to_adopt_exactly_one_wins(trio, pair):
    x, y, z = (trio.replicas[n] for n in ("ad-x", "ad-y", "ad-z"))
    name = f"{PREFIX}race"
    digests = source(name)
    marks = {n: log_mark(gw) for n, gw in trio.replicas.items()}
    pair_marks = {n: log_mark(gw) for n, gw in pair.replicas.items()}
    op_id = post_move(x, name)
    x.wait_log('msg="paused for a test" step=transferring', marks["ad-x"], timeout=120)
    killed_at = trio.kill("ad-x")
    deadline = killed_at + ADOPT_WITHIN
    for n, gw in (("ad-y", y), ("ad-z", z)):
        wait_re(gw, rf'msg="adoption held for a test" flow={re.escape(op_id)}', marks[n], deadline,
                f"{n} deciding to adopt {op_id}")
    held_s = time.time() - killed_at
    with open(trio.barrier, "w"):
        pass
    deadline = time.time() + 20
    won, lost = {}, {}
    while time.time() < deadline and len(won) + len(lost) < 2:
        for n, gw in (("ad-y", y), ("ad-z", z)):
            log = gw.logtext()[marks[n]:]
            if re.search(adopted_pattern(op_id), log):
                won[n] = True
            if f'msg="flow adoption lost to another replica" flow={op_id}' in log:
                lost[n] = True
        time.sleep(0.1)
    waits = start_waits(trio, op_id)  # (its move ends about 2 s after the adoption: these wait on it running)
    logs = {n: trio.replicas[n].logtext()[marks[n]:][-2500:] for n in ("ad-y", "ad-z")}
    assert len(won) == 1 and len(lost) == 1 and set(won) != set(lost), \
        f"exactly one adopts, the other loses: won {sorted(won)}, lost {sorted(lost)}; logs: {logs}"
    winner, loser = next(iter(won)), next(iter(lost))
    e = wait_re(trio.replicas[winner], ended_pattern(op_id), marks[winner], time.time() + 30, f"the end of {op_id}")
    print(f"race: both held {held_s:.1f} s after the kill; {winner} won, {loser} lost; outcome {e.group(2)}")
    assert e.group(2) == "rolled-back", e.group(0)
    time.sleep(3)  # the loser would have ended it by now too
    ends = {n: len(re.findall(ended_pattern(op_id), trio.replicas[n].logtext()[marks[n]:])) for n in ("ad-y", "ad-z")}
    assert ends == {winner: 1, loser: 0}, f"the move ended once, by the winner: {ends}"
    taken = [ln for ln in trio.replicas[loser].logtext()[marks[loser]:].splitlines()  # (its own lines, not requests)
             if op_id in ln and " msg=" in ln and "adoption held" not in ln and "adoption lost" not in ln]
    assert not taken, f"the loser touched the flow: {taken}"
    assert_once_with_data(name, "node1", digests)
    assert_no_marks()
    assert_no_flow_left()
    # replicas of another deployment (the pair, not peers of these) never touched it
    for n, gw in pair.replicas.items():
        seen = [ln for ln in gw.logtext()[pair_marks[n]:].splitlines() if op_id in ln and " msg=" in ln]
        assert not seen, f"{n}, not a peer of the trio, touched its flow: {seen}"
    op = op_final(op_id, waits)  # the winner, and the loser from the moment it knows it lost, answer it
    assert op["status"] == "Failure", op


# ---- e: a drain adopted: resumed under its own operation id ----
# (plugins/volume_drain.c, adopt_drain: a drain whose replica died is RESUMED by another under its own operation id, as
# its caller, once the moves adopted with it have ended; README "Draining a member")

DRAIN_PROJECT = "p-ad-drain"  # (the drain's volumes live there: it drains nothing of another test)
DRAIN_FREE = ("v-ad1", "v-ad2")  # with data (v-ad2 with a snapshot too): the drain moves them
DRAIN_USED = "v-ad-used"  # attached to a stopped container: the drain skips it


def drain_where(name):
    return [n for n in NODES if name in volumes(n, DRAIN_PROJECT)]


@pytest.fixture
def drain_vols(pair):
    """Project p-ad-drain, on node1: v-ad1 and v-ad2 (data; v-ad2 a snapshot s0 too), v-ad-used (data, attached to the
    stopped container c-ad). Returns their digests; the project and all in it are removed afterwards."""
    from test_drain import drop_project, make_project  # (test_drain imports this module: not at its top)
    drop_project(DRAIN_PROJECT)
    make_project(DRAIN_PROJECT)
    data = {}
    for name in DRAIN_FREE + (DRAIN_USED,):
        member_lxc("node1", "storage", "volume", "create", "pool1", name, "--target", "node1", "--project", DRAIN_PROJECT)
        data[name] = fill("node1", name, DRAIN_PROJECT)
    member_lxc("node1", "storage", "volume", "snapshot", "pool1", "v-ad2", "s0", "--target", "node1", "--project", DRAIN_PROJECT)
    member_lxc("node1", "init", "busybox", "c-ad", "--target", "node1", "--project", DRAIN_PROJECT)
    member_lxc("node1", "storage", "volume", "attach", "pool1", DRAIN_USED, "c-ad", "/mnt", "--project", DRAIN_PROJECT)
    yield data
    drop_project(DRAIN_PROJECT)


def assert_drained_once(data, rep):
    """The free volumes each exactly once, off node1 where the report says, with their data; the used one on node1,
    skipped as in use, with its data; no mark on any volume of the project."""
    for name in DRAIN_FREE:
        assert rep[name]["outcome"] == "moved" and rep[name]["to"] != "node1", rep
        assert drain_where(name) == [rep[name]["to"]], f"{name} is on {drain_where(name)}; report {rep[name]}"
        assert tree_digest(volume_dir(rep[name]["to"], name, DRAIN_PROJECT)) == data[name], f"{name}: its data changed"
    assert tree_digest(snapshot_dir(rep["v-ad2"]["to"], "v-ad2", "s0", DRAIN_PROJECT)) == data["v-ad2"], "v-ad2/s0 changed"
    assert rep[DRAIN_USED]["outcome"] == "skipped" and "in use" in rep[DRAIN_USED]["reason"], rep
    assert drain_where(DRAIN_USED) == ["node1"], drain_where(DRAIN_USED)
    assert tree_digest(volume_dir("node1", DRAIN_USED, DRAIN_PROJECT)) == data[DRAIN_USED]
    marked = {(n, v): cfg[MARK] for n in NODES for v, (cfg, _) in volumes(n, DRAIN_PROJECT).items() if MARK in cfg}
    assert not marked, f"volumes still carrying {MARK}: {marked}"


def drain_ended_pattern(drain_id):
    return (rf'msg="drain ended" drain={re.escape(drain_id)} member=node1 moved=(\d+) skipped=(\d+) failed=(\d+) '
            rf'err=("[^"]*"|\S*)')


def start_long_waits(dep, op_id, timeout):
    """start_waits for an operation that may run longer than 30 s (a drain: its moves one after the other): each wait
    asks for at most `timeout` s."""
    waits = {"haproxy": WAITERS.submit(op_wait, dep.ha, op_id, timeout)}
    for name in dep.running():
        waits[name] = WAITERS.submit(op_wait, dep.replicas[name].url, op_id, timeout)
    return waits


# step the owner recorded before it died -> the outcome of the drain's first move (None: no move had begun)
DRAIN_STEPS = {"drain-planned": None, "transferring": "rolled-back"}


@pytest.mark.parametrize("step", list(DRAIN_STEPS))
def test_owner_killed_for_good_the_other_replica_resumes_the_drain(pair, drain_vols, step):
    """A drain of node1 (parallel 1) started at A; A frozen right after `step` (the drain's plan, or its first move
    mid-transfer) and SIGKILLed for good. B adopts the drain (and, at "transferring", that move, which it rolls back),
    resumes the drain under its own operation id once the move has ended, plans again and ends it Success: both free
    volumes moved, each exactly once with its data, the used one skipped, nothing left in the cluster."""
    from test_drain import drain, report
    a, b = pair.replicas["ad-a"], pair.replicas["ad-b"]
    cert, key = os.environ["LXDGW_CLIENT_CERT"], os.environ["LXDGW_CLIENT_KEY"]
    pair.restart("ad-a", {"LXDGW_TEST_PAUSE_AT": step})
    mark_a, mark_b = log_mark(a), log_mark(b)
    code, body = drain(a.url, cert, key, query=f"project={DRAIN_PROJECT}", body={"parallel": 1})
    assert code == 202, f"drain answered {code}: {body}"
    drain_id = body["metadata"]["id"]
    a.wait_log(f'msg="paused for a test" step={step}', mark_a, timeout=120)
    held = flow_profiles()
    assert any(n.startswith(f"flow-{drain_id}-") for n in held), f"A paused after {step}, no flow-{drain_id}-*: {held}"
    move_id = None
    if step != "drain-planned":
        moving = re.findall(rf'msg="drain: moving" drain={re.escape(drain_id)} move=(\S+) volume=(\S+)', a.logtext()[mark_a:])
        assert len(moving) == 1 and moving[0][1] in DRAIN_FREE, f"A's drain started one move before it froze: {moving}"
        move_id = moving[0][0]
        assert any(n.startswith(f"flow-{move_id}-") for n in held), f"A paused at {step}, no flow-{move_id}-*: {held}"
    killed_at = pair.kill("ad-a")

    deadline = killed_at + ADOPT_WITHIN
    m = wait_re(b, adopted_pattern(drain_id), mark_b, deadline, f"flow adopted flow={drain_id}")
    adopt_s = time.time() - killed_at
    waits = start_long_waits(pair, drain_id, 150)
    assert m.group(1) == "drain", f"adopted as kind={m.group(1)}, expected drain: {m.group(0)}"
    assert m.group(2) == drain_id[:8] and int(m.group(3)) >= 1, m.group(0)
    r = wait_re(b, rf'msg="resuming an interrupted drain[^"]*" drain={re.escape(drain_id)} member=node1 ', mark_b, deadline,
                f"B resuming the drain {drain_id}")
    move_waits = move_end = None
    if move_id is not None:
        m = wait_re(b, adopted_pattern(move_id), mark_b, deadline, f"flow adopted flow={move_id} (the drain's move)")
        move_waits = start_waits(pair, move_id)
        assert m.group(1) == "move" and m.group(2) == move_id[:8], m.group(0)
        move_end = wait_re(b, ended_pattern(move_id), mark_b, deadline, f"the end of the drain's move {move_id}")
        assert move_end.group(2) == DRAIN_STEPS[step], f"the move adopted at {step}: {move_end.group(0)}"
    e = wait_re(b, drain_ended_pattern(drain_id), mark_b, time.time() + 120, f"the end of the resumed drain {drain_id}")
    print(f"drain at {step}: adopted {adopt_s:.1f} s after the kill, ended after {time.time() - killed_at:.1f} s: {e.group(0)}")
    assert e.group(1, 2, 3) == ("2", "1", "0"), e.group(0)

    log = b.logtext()[mark_b:]
    planned = log.find(f'msg="drain started" drain={drain_id} ', r.end())
    assert planned != -1, f"B never logged the resumed drain's new plan (drain started):\n{log[-4000:]}"
    if move_end is not None:  # the drain waited for the move adopted with it before it planned again
        assert planned > move_end.end(), f"B planned the drain again before the adopted move {move_id} ended:\n{log[-4000:]}"
    moves = re.findall(rf'msg="drain: moving" drain={re.escape(drain_id)} move=(\S+) volume=(\S+)', log)
    assert sorted(v for _, v in moves) == sorted(DRAIN_FREE), f"B's moves for the resumed drain: {moves}"
    assert move_id not in [mid for mid, _ in moves], moves
    if move_waits is not None:
        mop = op_final(move_id, move_waits)
        assert mop["status"] == "Failure", f"the drain's move, rolled back by B: {mop}"

    op = op_final(drain_id, waits)  # (the drain has ended: they answer at once)
    print(f"drain at {step}: the operation answers {op['status']} {op['err']!r}")
    assert op["status"] == "Success", f"the resumed drain: {op}"
    meta = op["metadata"]
    counts = tuple(meta[k] for k in ("volumes_total", "volumes_moved", "volumes_skipped", "volumes_failed"))
    assert counts == ("3", "2", "1", "0"), meta
    assert_drained_once(drain_vols, report(op))
    assert_no_marks()
    assert_no_flow_left()
    assert a.proc.poll() is not None, "the owner was never started again"
