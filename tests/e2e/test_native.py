"""The upgrade path: a backend that has cluster_internal_custom_volume_copy natively (a standalone Incus 6.0.4 daemon,
tests/cluster/incus.sh, at 127.0.0.21:8443) behind its own gateway. The gateway must advertise the extension exactly
once (the backend's own entry: nothing added) and step aside for the single-call copy: the backend answers it, and
the gateway passes that answer through unchanged; its volume_copy plugin never runs (no `volume copy started`).

Every answer through the gateway is compared with the same request sent to incusd directly, with the same client
certificate (cluster.sh's test client, which incus.sh makes incusd trust)."""
import os
import shutil
import time

import pytest

from helpers import CLUSTER_DIR, MiB, Gateway, curl, random_file, sh, tree_digest

EXT = "cluster_internal_custom_volume_copy"
ALL_EXT = "storage_volumes_all"  # plugins/volumes_all.c: GET /1.0/storage-volumes
STARTED = 'msg="volume copy started"'  # what plugins/volume_copy.c logs when it runs a copy itself
INCUS_SH = os.path.join(os.environ["LXDGW_TOP"], "tests/cluster/incus.sh")
INCUS_ADDR = "127.0.0.21:8443"
INCUS_DIR = os.path.join(CLUSTER_DIR, "incus")
DIRECT = f"https://{INCUS_ADDR}"
GW_ADDR = "127.0.0.1:8453"  # not conftest's 127.0.0.1:8443: that gateway (in front of the LXD cluster) may be running
CERT, KEY = os.environ["LXDGW_CLIENT_CERT"], os.environ["LXDGW_CLIENT_KEY"]
VOLUMES = "/1.0/storage-pools/pool1/volumes/custom"
INCUS_ENV = dict(os.environ, LXDGW_INCUS_ADDR=INCUS_ADDR)


def incus_sh(*args, check=True, timeout=120):
    return sh(["bash", INCUS_SH, *args], check=check, timeout=timeout, env=INCUS_ENV)


def incus(*args, check=True):
    """`incus` as incusd's local admin (unix socket)."""
    return incus_sh("incus", *args, check=check)


def volume_dir(vol):
    return f"{INCUS_DIR}/storage-pools/pool1/custom/default_{vol}"


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """incusd (incus.sh start) and a gateway in front of it alone, trusted by it. Afterwards both are gone: the gateway
    stopped, incusd stopped and its directory removed (incus.sh stop), the gateway's state directory removed unless
    a sanitizer report in it fails the run."""
    incus_sh("start")
    gw = None
    state = str(tmp_path_factory.mktemp("native-gw"))
    try:
        # the certificate incusd serves (standalone: its server.crt) is what the gateway pins
        shutil.copy(f"{INCUS_DIR}/server.crt", f"{state}/backend.crt")
        binary = os.environ["LXDGW_BINARY"]
        sh([binary, "init", "--state-dir", state, "--listen", GW_ADDR, "--member", DIRECT,
            "--cluster-certificate", f"{state}/backend.crt"])
        incus("config", "trust", "add-certificate", f"{state}/identity.crt", "--name", "lxdgw-native-gateway")
        gw = Gateway(binary, state, GW_ADDR, name="native-gateway")
        gw.start()
        # trust store read, and (sent before it, at start) the member probe that tells the gateway what incusd has
        gw.wait_trusted(CERT, KEY)
        yield gw
    finally:
        if gw is not None:
            gw.stop()
        incus_sh("stop")
    gw.check_sanitizers()
    shutil.rmtree(state)


@pytest.fixture
def v1(native):
    """Only the volume v1 (with data) in pool1; returns its tree digest on disk."""
    for name in incus("storage", "volume", "list", "pool1", "type=custom", "-f", "csv", "-c", "n").stdout.split():
        incus("storage", "volume", "delete", "pool1", name)
    incus("storage", "volume", "create", "pool1", "v1")
    d = volume_dir("v1")
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    random_file(os.path.join(d, "data.bin"), 2 * MiB)
    random_file(os.path.join(d, "sub", "small.bin"), 4096)
    return tree_digest(d)


def essence(body):
    """An answer without what differs between two equal requests (operation ids and times)."""
    if not isinstance(body, dict):
        return body
    out = {k: v for k, v in body.items() if k != "operation"}
    meta = body.get("metadata")
    if body.get("type") == "async" and isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in ("id", "created_at", "updated_at", "resources")}
    return out


def test_extension_advertised_once(native):
    code, via = curl(native.url + "/1.0", CERT, KEY)
    assert code == 200, via
    assert via["metadata"]["auth"] == "trusted"
    exts = via["metadata"]["api_extensions"]
    assert exts.count(EXT) == 1
    code, direct = curl(DIRECT + "/1.0", CERT, KEY)
    assert code == 200 and direct["metadata"]["auth"] == "trusted"
    # incusd's own list, in its order, and after it only what a plugin adds that incusd lacks: storage_volumes_all is
    # LXD's (5.21), no Incus release has it (test_volumes_all_served below)
    assert exts == direct["metadata"]["api_extensions"] + [ALL_EXT]
    # the untrusted view lists extensions too
    code, anon = curl(native.url + "/1.0")
    assert code == 200 and anon["metadata"]["auth"] == "untrusted"
    assert anon["metadata"]["api_extensions"].count(EXT) == 1
    assert STARTED not in native.logtext()


# (query, source.location) of the copy request. Standalone, incusd has no member names; every case but the first has
# the shape the gateway's plugin claims while a cluster lacks the extension (a target, and a source location naming
# another member), so only stepping aside gives incusd's own answer. SELF: incusd's server_name.
CASES = {
    "plain": ("", None),
    "target-none": ("?target=none", "SELF"),  # "none" is what a standalone server calls itself in operations
    "target-unknown": ("?target=node9", "SELF"),
    "target-self": ("?target=SELF", "node9"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_copy_passes_through(native, v1, case):
    code, info = curl(DIRECT + "/1.0", CERT, KEY)
    assert code == 200
    server = info["metadata"]["environment"]["server_name"]
    query, location = (s.replace("SELF", server) if s else s for s in CASES[case])
    name = "v2" if case == "plain" else f"v2-{case}"

    def body(vol):
        source = {"type": "copy", "name": "v1", "pool": "pool1"}
        if location is not None:
            source["location"] = location
        return {"name": vol, "type": "custom", "source": source}

    # through the gateway first, so nothing done directly can shape its answer
    gw_code, gw_answer = curl(native.url + VOLUMES + query, CERT, KEY, method="POST", data=body(name))
    code, answer = curl(DIRECT + VOLUMES + query, CERT, KEY, method="POST", data=body(name + "-direct"))
    print(f"{case}: incusd answered {code} {answer}")
    assert (gw_code, essence(gw_answer)) == (code, essence(answer))

    if gw_code == 202:  # accepted: both copies end the same way, and a copy made through the gateway has v1's data
        results = []
        for base, accepted, vol in ((native.url, gw_answer, name), (DIRECT, answer, name + "-direct")):
            c, done = curl(f"{base}/1.0/operations/{accepted['metadata']['id']}/wait?timeout=60", CERT, KEY, timeout=70)
            assert c == 200, done
            results.append((done["metadata"]["status"], done["metadata"]["err"]))
            if done["metadata"]["status"] == "Success":
                assert tree_digest(volume_dir(vol)) == v1
        assert results[0] == results[1]

    # the access line: answered by incusd through pass-through, with incusd's status (access lines are written out
    # within 250 ms: gateway/log.h)
    def logged(text):
        return any("method=POST" in ln and f"/volumes/custom{query}" in ln and f"status={code}" in ln
                   and f"member={DIRECT}" in ln for ln in text.splitlines())
    deadline = time.time() + 5
    while not logged(native.logtext()) and time.time() < deadline:
        time.sleep(0.05)
    text = native.logtext()
    assert STARTED not in text
    assert logged(text), text[-3000:]


@pytest.mark.parametrize("case", ["target-none", "target-unknown"])
def test_snapshot_copy_passes_through(native, v1, case):
    """incusd has storage_api_remote_volume_snapshot_copy: the gateway adds nothing (test_extension_advertised_once)
    and steps aside for a copy of one snapshot in the shape its plugin claims while a cluster lacks it (a target, a
    source location naming another member, a source `<volume>/<snapshot>`): incusd's own answer, no temporary volume,
    the plugin never runs."""
    code, info = curl(DIRECT + "/1.0", CERT, KEY)
    server = info["metadata"]["environment"]["server_name"]
    incus("storage", "volume", "snapshot", "create", "pool1", "v1", "s0")
    try:
        snapshot_copy_passes_through(native, server, case)
    finally:  # (the v1 fixture deletes volumes, not snapshots)
        incus("storage", "volume", "snapshot", "delete", "pool1", "v1", "s0", check=False)


def snapshot_copy_passes_through(native, server, case):
    query, location = (s.replace("SELF", server) for s in CASES[case])

    def body(vol):
        return {"name": vol, "type": "custom", "source": {"type": "copy", "name": "v1/s0", "pool": "pool1", "location": location}}

    gw_code, gw_answer = curl(native.url + VOLUMES + query, CERT, KEY, method="POST", data=body(f"v3-{case}"))
    code, answer = curl(DIRECT + VOLUMES + query, CERT, KEY, method="POST", data=body(f"v3-{case}-direct"))
    assert (gw_code, essence(gw_answer)) == (code, essence(answer))
    if gw_code == 202:
        for base, accepted in ((native.url, gw_answer), (DIRECT, answer)):
            c, done = curl(f"{base}/1.0/operations/{accepted['metadata']['id']}/wait?timeout=60", CERT, KEY, timeout=70)
            assert c == 200, done
    names = incus("storage", "volume", "list", "pool1", "type=custom", "-f", "csv", "-c", "n").stdout.split()
    assert not [n for n in names if n.startswith("lxd-gateway-")], names
    assert 'msg="snapshot copy started"' not in native.logtext()


@pytest.mark.parametrize("case", ["target-unknown", "target-self"])  # ("target-none" starts a migration source)
def test_move_passes_through(native, v1, case):
    """A single-call move in the shape the volume_move plugin claims while a cluster lacks the extension (POST of the
    volume with a target and a source location naming another member): incusd's own answer, passed through; the
    plugin never runs, and v1 stays where it is with its data."""
    code, info = curl(DIRECT + "/1.0", CERT, KEY)
    server = info["metadata"]["environment"]["server_name"]
    query, location = (s.replace("SELF", server) for s in CASES[case])
    body = {"name": "v1", "migration": True, "source": {"location": location}}
    gw_code, gw_answer = curl(native.url + VOLUMES + "/v1" + query, CERT, KEY, method="POST", data=body)
    code, answer = curl(DIRECT + VOLUMES + "/v1" + query, CERT, KEY, method="POST", data=body)
    print(f"{case}: incusd answered {code} {answer}")
    assert (gw_code, essence(gw_answer)) == (code, essence(answer))
    assert 'msg="volume move started"' not in native.logtext()
    assert tree_digest(volume_dir("v1")) == v1


def test_volumes_all_served(native, v1):
    """storage_volumes_all is LXD's alone: incusd 6.0.4 (like every Incus release, and the incus client, which lists
    volumes per pool only) has no /1.0/storage-volumes, so the gateway in front of it does NOT step aside for this
    one: it advertises it and answers from incusd's per-pool lists, with the same certificate. Stepping aside for it
    needs a backend that has it (LXD 5.21+), which this machine does not have; the rule is the registry's, shared by
    every plugin (gw_members_lack_extension, tests/unit/test_members.c), and the copy's cases above show it."""
    code, direct = curl(DIRECT + "/1.0/storage-volumes", CERT, KEY)
    assert code == 404 and direct["type"] == "error"  # incusd has no such route
    for query in ("", "?recursion=1", "?filter=name+eq+v1"):
        code, via = curl(native.url + "/1.0/storage-volumes/custom" + query, CERT, KEY)
        assert code == 200, via
        code, pool = curl(DIRECT + VOLUMES + query, CERT, KEY)
        assert code == 200, pool
        want = [dict(v, pool="pool1") if isinstance(v, dict) else v for v in pool["metadata"]]
        assert via["metadata"] == want and len(want) == 1
