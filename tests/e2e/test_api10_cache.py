"""GET /1.0 from the gateway's cache (gateway/api10.c): every kind of caller sees each change on its first request after
it, with no sleep, and always what LXD shows that caller directly (real cluster).

Most tests run against a gateway of their own whose cache keeps answers for an hour (cluster.server_cache_ttl: 1h), so
that only the invalidations can make an answer fresh, never the 3 s safety net; the session gateway (the default 3 s)
shows the bound for a change that no event may bring.

The kinds of caller: an unrestricted client (forwarded as the gateway), a client restricted to a project (a shadow), a
metrics certificate and an untrusted certificate (both forwarded anonymously), and no certificate at all. "What LXD
shows it" is the member's direct answer to the same certificate, less what the gateway adds on purpose
(auth_user_name, config booleans as strings, the single-call extension while the cluster lacks it). LXD 5.0.2 shows a
restricted client `config: null` (and an ETag over null), an untrusted one neither `config` nor `environment`.
"""
import json
import os
import random
import re
import time

import pytest

from conftest import METRICS_ADDR, gateway_instance, member_lxc
from helpers import Lxc, curl, sh
from test_identity import fingerprint, new_cert
from test_trust_boundary import Https

CLUSTER = os.path.join(os.environ["LXDGW_TOP"], "tests/cluster/cluster.sh")
DIRECT = {"node1": "https://127.0.0.11:8443", "node2": "https://127.0.0.12:8443", "node3": "https://127.0.0.13:8443"}
EXT = "cluster_internal_custom_volume_copy"  # added by plugins/api_extensions.c while the members lack it
# every extension a plugin adds while the members lack it (plugins/registry.c)
ADDED = {EXT, "storage_api_remote_volume_snapshot_copy", "storage_volumes_all"}
TTL = 3  # cluster.server_cache_ttl's default: a change made on a member shows after its event, at the latest after this
CACHED_ADDR, CACHED_METRICS = "127.0.0.1:8446", "127.0.0.1:9446"


def get(url, cert=None, key=None):
    """(status, body, ETag or None) of one GET."""
    cmd = ["curl", "-sk", "--max-time", "20", "-D", "-", "-o", "-"]
    if cert:
        cmd += ["--cert", cert, "--key", key]
    out = sh(cmd + [url], timeout=30).stdout
    head, _, body = out.partition("\n\n")  # (text mode: the CRLFs are newlines)
    status = int(head.split()[1])
    etag = re.search(r"(?im)^etag:\s*(\S+)", head)
    return status, json.loads(body), etag.group(1) if etag else None


def normal(meta):
    """A view with the gateway's deliberate additions taken out, for comparison with LXD's own."""
    meta = dict(meta)
    meta.pop("auth_user_name", None)
    meta["api_extensions"] = [e for e in meta["api_extensions"] if e not in ADDED]
    if isinstance(meta.get("config"), dict):
        meta["config"] = {k: (("true" if v else "false") if isinstance(v, bool) else v) for k, v in meta["config"].items()}
    return meta


def hits(gateway):
    metrics = CACHED_METRICS if gateway.addr == CACHED_ADDR else METRICS_ADDR
    text = sh(["curl", "-s", "--max-time", "10", f"http://{metrics}/metrics"]).stdout
    return int(re.search(r'lxd_gateway_api10_requests_total\{result="hit"\} (\d+)', text).group(1))


@pytest.fixture(scope="module")
def cached(gateway, tmp_path_factory):
    """A gateway whose cached answers live an hour: fresh only by invalidation. (After the session gateway: the
    trust store then holds that one's entries already.)"""
    yield from gateway_instance(str(tmp_path_factory.mktemp("gw-cached")), CACHED_ADDR, CACHED_METRICS,
                                "  server_cache_ttl: 1h\n")


@pytest.fixture(scope="module")
def lxc_cached(cached, tmp_path_factory, env):
    """lxc 5.0.2 with the trusted client certificate, remote `gw` = the cached gateway."""
    conf = str(tmp_path_factory.mktemp("lxc-cached"))
    sh(["cp", env["LXDGW_CLIENT_CERT"], f"{conf}/client.crt"])
    sh(["cp", env["LXDGW_CLIENT_KEY"], f"{conf}/client.key"])
    client = Lxc(conf)
    client.run("remote", "add", "gw", cached.url, "--accept-certificate")
    return client


@pytest.fixture(scope="module")
def callers(gateway, cached, env, tmp_path_factory):
    """name -> (cert, key) for each kind of caller (None, None: no certificate)."""
    d = tmp_path_factory.mktemp("api10-cache")
    restricted = new_cert(d, "api10-restricted")
    metrics = new_cert(d, "api10-metrics")
    member_lxc("node1", "config", "trust", "add", restricted[0], "--name", "api10-restricted", "--restricted",
               "--projects", "default")
    member_lxc("node1", "config", "trust", "add", metrics[0], "--name", "api10-metrics", "--type", "metrics")
    for gw in (gateway, cached):
        gw.wait_trusted(*restricted)
        deadline = time.time() + 10  # a metrics certificate is untrusted on /1.0: its /1.0/metrics says it is known
        while curl(gw.url + "/1.0/metrics", *metrics)[0] != 200 and time.time() < deadline:
            time.sleep(0.2)
    yield {"unrestricted": (env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]), "restricted": restricted, "metrics": metrics,
           "untrusted": (env["LXDGW_UNTRUSTED_CERT"], env["LXDGW_UNTRUSTED_KEY"]), "none": (None, None)}
    for crt, _ in (restricted, metrics):
        member_lxc("node1", "config", "trust", "remove", fingerprint(crt)[:12], check=False)


@pytest.fixture
def config_key():
    """images.auto_update_interval, put back as it was after the test."""
    before = json.loads(member_lxc("node1", "query", "/1.0").stdout)["config"].get("images.auto_update_interval")
    yield "images.auto_update_interval"
    if before is None:
        member_lxc("node1", "config", "unset", "images.auto_update_interval", check=False)
    else:
        member_lxc("node1", "config", "set", "images.auto_update_interval", before, check=False)


def trust_password_hash():
    """The stored (salted) hash of core.trust_password: it changes whenever the password is set, to anything."""
    out = sh(["env", f"LXD_DIR={os.environ['LXDGW_CLUSTER_DIR']}/node1", "lxd", "sql", "global",
              "SELECT value FROM config WHERE key = 'core.trust_password'"]).stdout
    return re.findall(r"[0-9a-f]{64,}", out)


@pytest.fixture
def trust_password():
    """The hash of the trust password now; put back afterwards if a test changed it (the other tests use it)."""
    before = trust_password_hash()
    assert before, "the test cluster has a trust password"
    yield before
    if trust_password_hash() != before:
        member_lxc("node1", "config", "set", "core.trust_password", os.environ["LXDGW_TRUST_PASSWORD"])


def warm(gateway, callers):
    """Two GET /1.0 per caller: the second one is served from the cache (the hit counter says the cache is in use)."""
    before = hits(gateway)
    for crt, key in callers.values():
        for _ in range(2):
            assert get(gateway.url + "/1.0", crt, key)[0] == 200
    assert hits(gateway) >= before + len(callers), "GET /1.0 is not served from the cache"


def connect(gateway, callers):
    """A kept-alive connection per caller, opened (TLS handshake done) before a change, so that the GET after it comes
    within a millisecond of the change's answer: before any event about it can reach the gateway."""
    conns = {name: Https((gateway.addr.split(":")[0], int(gateway.addr.split(":")[1])), crt, key)
             for name, (crt, key) in callers.items()}
    for c in conns.values():
        assert c("GET", "/1.0")[0] == 200
    return conns


def check_all(gateway, callers, direct="node1", conns=None):
    """Each caller's GET /1.0 through the gateway (the first since whatever changed; on `conns` if given, all of them
    before anything else) is what LXD shows it directly."""
    seen = {}
    answers = {name: conns[name]("GET", "/1.0") for name in callers} if conns else {}
    for name, (crt, key) in callers.items():
        code, body = answers[name] if conns else get(gateway.url + "/1.0", crt, key)[:2]
        assert code == 200, (name, body)
        meta = body["metadata"]
        member = meta.get("environment", {}).get("server_name", direct)
        dcode, dbody, _ = get(DIRECT[member] + "/1.0", crt, key)
        assert dcode == 200, (name, dbody)
        assert normal(meta) == normal(dbody["metadata"]), f"{name}: the gateway shows what LXD does not"
        if meta["auth"] == "trusted":
            assert meta["auth_user_name"] == fingerprint(crt), name
        seen[name] = meta
    return seen


def test_config_change_through_the_gateway_is_seen_at_once(cached, callers, lxc_cached, config_key, trust_password):
    """`lxc config set` through the gateway (GET, then PUT with the ETag as If-Match): the next GET /1.0 of every
    caller is fresh."""
    for _ in range(2):
        warm(cached, callers)
        value = str(random.randint(100, 10_000))
        lxc_cached.run("config", "set", "gw:", config_key, value)
        seen = check_all(cached, callers)
        assert seen["unrestricted"]["config"][config_key] == value
        assert seen["restricted"]["config"] is None and seen["restricted"]["auth"] == "trusted"
        for name in ("metrics", "untrusted", "none"):
            assert seen[name]["auth"] == "untrusted" and "environment" not in seen[name], name
    # the same with PATCH /1.0 and every caller's next GET on a connection already open: within a millisecond of the
    # answer, before the config-updated event can have reached the gateway (the write itself drops the cache)
    for _ in range(3):
        warm(cached, callers)
        conns = connect(cached, callers)
        value = str(random.randint(100, 10_000))
        code, body = conns["unrestricted"]("PATCH", "/1.0", {"config": {config_key: value}})
        assert code == 200, body
        seen = check_all(cached, callers, conns=conns)
        assert seen["unrestricted"]["config"][config_key] == value
        for c in conns.values():
            c.close()
    assert trust_password_hash() == trust_password, "lxc config set through the gateway changed the trust password"


def set_on_member_and_wait(gw, callers, node, config_key, limit, why):
    """Sets `config_key` straight on `node` (not through the gateway) and waits, at most `limit` s, until GET /1.0
    through `gw` shows the new value to the unrestricted caller."""
    warm(gw, callers)
    crt, key = callers["unrestricted"]
    value = str(random.randint(100, 10_000))
    member_lxc(node, "config", "set", config_key, value)
    t0 = time.time()
    while get(gw.url + "/1.0", crt, key)[1]["metadata"]["config"].get(config_key) != value:
        assert time.time() - t0 < limit, why
        time.sleep(0.05)
    print(f"change made on {node} seen through the gateway after {time.time() - t0:.3f} s")


def test_config_change_on_the_stream_member_is_seen_by_its_event(cached, callers, config_key):
    """A change made on node1 directly (not through the gateway), whose event stream the gateway follows: with answers
    kept for an hour, only the config-updated event can drop the cached one."""
    set_on_member_and_wait(cached, callers, "node1", config_key, 3, "the config-updated event did not drop the cached answer")
    check_all(cached, callers)


def test_config_change_on_another_member_is_seen_within_the_ttl(gateway, callers, config_key):
    """A change made on node2 directly reaches the gateway's stream (on node1) over LXD's member-to-member event link,
    which may be down until the next heartbeat: the session gateway's default TTL (3 s) bounds how long it takes."""
    set_on_member_and_wait(gateway, callers, "node2", config_key, TTL + 2,
                           "the gateway still shows the old configuration after the TTL")
    check_all(gateway, callers)


def test_newly_trusted_certificate_is_trusted_at_once(cached, callers, tmp_path):
    """An untrusted caller whose certificate is added through the gateway gets the trusted view on its next request,
    and the untrusted view again right after its removal through the gateway."""
    crt, key = new_cert(tmp_path, "api10-new")
    fp = fingerprint(crt)
    warm(cached, dict(callers, new=(crt, key)))
    assert get(cached.url + "/1.0", crt, key)[1]["metadata"]["auth"] == "untrusted"
    admin = callers["unrestricted"]
    der = sh(["sh", "-c", f"openssl x509 -in {crt} -outform DER | base64 -w0"]).stdout
    code, body = curl(cached.url + "/1.0/certificates", *admin, method="POST",
                      data={"type": "client", "name": "api10-new", "certificate": der})
    assert code in (200, 201, 202), body
    try:
        seen = check_all(cached, dict(callers, new=(crt, key)))
        assert seen["new"]["auth"] == "trusted" and seen["new"]["auth_user_name"] == fp and seen["new"]["config"]
    finally:
        code, body = curl(cached.url + f"/1.0/certificates/{fp}", *admin, method="DELETE")
        assert code == 200, body
    seen = check_all(cached, dict(callers, new=(crt, key)))
    assert seen["new"]["auth"] == "untrusted"


def test_restricting_a_certificate_changes_its_view_at_once(cached, callers, tmp_path):
    """A client restricted (then unrestricted) through the gateway loses (then regains) `config` on its next GET /1.0."""
    crt, key = new_cert(tmp_path, "api10-restrict")
    fp = fingerprint(crt)
    member_lxc("node1", "config", "trust", "add", crt, "--name", "api10-restrict")
    cached.wait_trusted(crt, key)
    admin = callers["unrestricted"]
    all_callers = dict(callers, subject=(crt, key))
    try:
        for restricted in (True, False, True, False):
            warm(cached, all_callers)
            conns = connect(cached, all_callers)  # the subject's next GET comes right after the PATCH's answer
            assert bool(conns["subject"]("GET", "/1.0")[1]["metadata"]["config"]) == restricted
            change = {"restricted": True, "projects": ["default"]} if restricted else {"restricted": False}
            code, body = conns["unrestricted"]("PATCH", f"/1.0/certificates/{fp}", change)
            assert code == 200, body
            seen = check_all(cached, all_callers, conns=conns)
            assert bool(seen["subject"]["config"]) != restricted and seen["subject"]["auth_user_name"] == fp
            for c in conns.values():
                c.close()
    finally:
        member_lxc("node1", "config", "trust", "remove", fp[:12], check=False)


def test_query_is_part_of_the_key(cached, callers):
    """?project= and ?target= answers are kept apart (LXD echoes the project and answers as the target); an odd query
    is never kept, nor is an error."""
    crt, key = callers["unrestricted"]
    for _ in range(2):
        for project in ("pa", "pb"):
            meta = get(cached.url + f"/1.0?project={project}", crt, key)[1]["metadata"]
            assert meta["environment"]["project"] == project
        for node in ("node2", "node3"):
            code, body, etag = get(cached.url + f"/1.0?target={node}", crt, key)
            assert body["metadata"]["environment"]["server_name"] == node
            direct = get(DIRECT[node] + "/1.0", crt, key)
            assert etag == direct[2], "the ETag must be the target member's"
            assert normal(body["metadata"]) == normal(direct[1]["metadata"])
    before = hits(cached)
    for _ in range(3):
        assert get(cached.url + "/1.0?recursion=1&x=y", crt, key)[0] == 200
    assert hits(cached) == before, "an odd query string was served from the cache"
    for _ in range(3):  # an error (LXD: no such member) is never kept
        assert get(cached.url + "/1.0?target=nosuchmember", crt, key)[0] != 200
    assert hits(cached) == before, "an error was served from the cache"


def test_etag_is_the_members_and_if_match_works(cached, callers, lxc_cached, config_key, trust_password):
    """The ETag served is node1's for the same data; a PUT through the gateway with it succeeds, one with an older ETag
    is refused by LXD (412), and the next GET /1.0 carries the new ETag. `lxc config set` through the gateway sends
    back the whole config it read, in which the gateway shows core.trust_password as "true" (api_extensions.c): it
    must reach LXD as `true` ("unchanged"), or the trust password would become "true"."""
    crt, key = callers["unrestricted"]
    password = trust_password
    warm(cached, callers)
    _, body, etag = get(cached.url + "/1.0", crt, key)
    _, dbody, detag = get(DIRECT["node1"] + "/1.0", crt, key)
    assert etag is not None and etag == detag
    config = dict(body["metadata"]["config"], **{config_key: str(random.randint(100, 10_000))})  # as lxc sends it back
    put = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--cert", crt, "--key", key, "-X", "PUT",
           "-H", "Content-Type: application/json", "--data-binary", json.dumps({"config": config}), cached.url + "/1.0"]
    assert sh(put + ["-H", f"If-Match: {etag}"]).stdout == "200"
    _, body2, etag2 = get(cached.url + "/1.0", crt, key)
    assert etag2 != etag and etag2 == get(DIRECT["node1"] + "/1.0", crt, key)[2]
    assert body2["metadata"]["config"][config_key] == config[config_key]
    assert sh(put + ["-H", f"If-Match: {etag}"]).stdout == "412"  # the old ETag no longer matches
    lxc_cached.run("config", "set", "gw:", config_key, "15")  # lxc: GET /1.0 (from the cache), PUT with its ETag
    assert get(cached.url + "/1.0", crt, key)[1]["metadata"]["config"][config_key] == "15"
    assert trust_password_hash() == password, "the trust password was changed by a PUT that only meant to set " + config_key


def test_member_killed(cached, callers):
    """node2 dies (the gateway's event stream stays on node1, so only the member's health can tell the cache): GET
    /1.0 goes on from node1, exactly as node1 shows it, with the single-call extension as gw_members_lack_extension
    decides (every member here is LXD 5.0.2, which lacks it); GET /1.0?target=node2, kept from node2 a moment ago, is
    not served from the cache any more: LXD can no longer show node2's view."""
    targeted = cached.url + "/1.0?target=node2"
    warm(cached, callers)
    for crt, key in callers.values():
        for _ in range(2):
            assert get(targeted, crt, key)[1]["metadata"].get("environment", {}).get("server_name", "node2") == "node2"
    sh(["bash", CLUSTER, "kill", "node2"])
    try:
        seen = check_all(cached, callers, direct="node1")
        for name, meta in seen.items():
            assert EXT in meta["api_extensions"], name
        # a trusted caller: node1 forwards to node2, and fails after waiting 10 s for its event link; what matters is
        # that no cached view of node2 comes back
        r = sh(["curl", "-sk", "--max-time", "2", "--cert", callers["unrestricted"][0], "--key", callers["unrestricted"][1],
                targeted], check=False)
        assert "\"server_name\":\"node2\"" not in r.stdout, "a dead member's view served from the cache"
        for name in ("metrics", "untrusted", "none"):  # LXD answers the untrusted view before forwarding
            code, body, _ = get(targeted, *callers[name])
            assert code == 200 and normal(body["metadata"]) == normal(get(DIRECT["node1"] + "/1.0?target=node2",
                                                                          *callers[name])[1]["metadata"])
    finally:
        sh(["bash", CLUSTER, "start", "node2"])
        sh(["bash", CLUSTER, "settle"], timeout=120)
