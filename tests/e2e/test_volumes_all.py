"""GET /1.0/storage-volumes[/<type>] (API extension storage_volumes_all, LXD 5.21) through the gateway, which builds it
from LXD 5.0.2's per-pool lists (plugins/volumes_all.c). Every answer through the gateway is compared with the per-pool
lists read from a member directly, with the same client certificate: the same volumes, each with its `pool`, sorted
by type then name as native sorts them; LXD's errors as LXD writes them."""
import json
import urllib.parse

import pytest

from conftest import member_lxc
from helpers import curl
from test_trust_boundary import admin_add, admin_remove, fingerprint, make_cert

GW = "https://127.0.0.1:8443"
DIRECT = "https://127.0.0.11:8443"
POOLS = ("pool1", "pool2")
RANK = {"container": 0, "image": 1, "custom": 2, "virtual-machine": 3}
# (pool, project, name, member)
VOLUMES = [("pool1", "default", "va", "node1"), ("pool1", "default", "vb", "node2"), ("pool2", "default", "vd", "node3"),
           ("pool1", "vap2", "vc", "node3"), ("pool2", "vap2", "vp", "node1"), ("pool2", "default", "va", "node2")]


@pytest.fixture(scope="module")
def volumes(gateway, env):
    """A second pool (dir, on every member), the project vap2 with its own volumes, and VOLUMES; all gone afterwards."""
    cert, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]
    for node in ("node1", "node2", "node3"):
        member_lxc("node1", "storage", "create", "pool2", "dir", "--target", node)
    member_lxc("node1", "storage", "create", "pool2", "dir")
    member_lxc("node1", "project", "create", "vap2", "-c", "features.storage.volumes=true", "-c", "features.images=false",
               "-c", "features.profiles=false")
    try:
        for pool, project, name, node in VOLUMES:
            code, body = curl(f"{DIRECT}/1.0/storage-pools/{pool}/volumes/custom?project={project}&target={node}", cert, key,
                              "POST", {"name": name, "type": "custom", "description": f"{name} on {pool}"})
            assert code in (200, 201), body
        yield cert, key
    finally:
        for pool, project, name, node in VOLUMES:
            member_lxc("node1", "storage", "volume", "delete", pool, name, "--project", project, "--target", node, check=False)
        member_lxc("node1", "project", "delete", "vap2", check=False)
        member_lxc("node1", "storage", "delete", "pool2", check=False)


def key_of(v):
    """native's order: type, then name (the pool only to make the comparison of equal names deterministic)"""
    if isinstance(v, str):
        path = urllib.parse.urlsplit(v).path.split("/")  # /1.0/storage-pools/<pool>/volumes/<type>/<name>
        return RANK.get(path[5], 4), urllib.parse.unquote(path[6])
    return RANK.get(v["type"], 4), v["name"]


def direct_list(cert, key, vtype, query):
    """What the per-pool lists say, read from a member directly: the union over POOLS, `pool` added to objects."""
    out = []
    for pool in POOLS:
        code, body = curl(f"{DIRECT}/1.0/storage-pools/{pool}/volumes{'/' + vtype if vtype else ''}?{query}", cert, key)
        if code != 200:
            return code, body
        for v in body["metadata"]:
            if isinstance(v, dict):
                v = dict(v, pool=pool)
            out.append(v)
    return 200, out


def via(cert, key, vtype, query):
    return curl(f"{GW}/1.0/storage-volumes{'/' + vtype if vtype else ''}?{query}", cert, key)


def same(gw_list, direct):
    """the same volumes, and the gateway's in native's order"""
    canon = lambda lst: sorted(json.dumps(v, sort_keys=True) for v in lst)
    assert canon(gw_list) == canon(direct)
    assert [key_of(v) for v in gw_list] == sorted(key_of(v) for v in gw_list)


def test_extension_advertised(gateway, volumes):
    cert, key = volumes
    code, body = curl(f"{GW}/1.0", cert, key)
    assert code == 200 and body["metadata"]["api_extensions"].count("storage_volumes_all") == 1
    code, body = curl(f"{DIRECT}/1.0", cert, key)
    assert "storage_volumes_all" not in body["metadata"]["api_extensions"]  # LXD 5.0.2 lacks it


@pytest.mark.parametrize("vtype,query", [
    ("", ""), ("", "recursion=1"), ("custom", ""), ("custom", "recursion=1"), ("image", "recursion=1"),
    ("", "project=vap2"), ("", "recursion=1&project=vap2"), ("", "all-projects=true"), ("", "recursion=1&all-projects=1"),
    ("", "filter=name+eq+va"), ("", "recursion=1&all-projects=true&filter=location+eq+node3+or+description+eq+%22vb+on+pool1%22"),
    ("custom", "target=node2&all-projects=true"), ("", "recursion=1&target=node1"),
    # LXD reads recursion with Go's Atoi, then != 0: "1x" is none, "-1" and "+01" are recursion
    ("", "recursion=1x"), ("", "recursion=-1"), ("", "recursion=%2B01"), ("custom", "recursion=99999999999999999999"),
])
def test_same_as_the_pools(volumes, vtype, query):
    cert, key = volumes
    code, body = via(cert, key, vtype, query)
    assert code == 200, body
    dcode, direct = direct_list(cert, key, vtype, query)
    assert dcode == 200, direct
    assert body["type"] == "sync" and body["status_code"] == 200
    same(body["metadata"], direct)
    assert all(v["pool"] in POOLS for v in body["metadata"] if isinstance(v, dict))
    assert len(body["metadata"]) > 0 or vtype == "image"


@pytest.mark.parametrize("flt,want", [
    ("pool eq pool2", lambda v: v["pool"] == "pool2"),
    ("pool eq POOL2", lambda v: v["pool"] == "pool2"),  # a string field compares without case
    ("pool eq pool.", lambda v: True),  # "." is any one character
    ("not pool eq pool1 and name eq va", lambda v: v["pool"] != "pool1" and v["name"] == "va"),
    ("pool ne pool1 or project eq vap2", lambda v: v["pool"] != "pool1" or v["project"] == "vap2"),
    ("name eq va and pool eq pool1", lambda v: v["name"] == "va" and v["pool"] == "pool1"),
    ("pool eq nosuch", lambda v: False),
    # a pattern, as LXD 6.1 reads a string field's value: a regular expression without case, anchored unless it has ^ or $
    ("pool eq pool[2]", lambda v: v["pool"] == "pool2"),
    ("pool eq P.*1", lambda v: v["pool"] == "pool1"),
    ("pool eq ool", lambda v: False),  # anchored at both ends
    ("pool eq ^POOL", lambda v: True),  # a ^: anchored at the start only
    ("pool eq 2$", lambda v: v["pool"] == "pool2"),
    ("pool eq pool1|pool2x", lambda v: v["pool"] == "pool1"),  # ^pool1|pool2x$, as Go reads it
    ("pool eq pool(1|3) or name eq vd", lambda v: v["pool"] == "pool1" or v["name"] == "vd"),
    ("not pool eq [[:alpha:]]+[2-9]", lambda v: v["pool"] == "pool1"),
])
def test_filter_on_pool(volumes, flt, want):
    """5.0.2's volumes have no `pool`: the gateway decides those clauses per pool, the members the rest"""
    cert, key = volumes
    code, everything = via(cert, key, "", "recursion=1&all-projects=true")
    assert code == 200
    q = urllib.parse.urlencode({"recursion": 1, "all-projects": "true", "filter": flt})
    code, body = via(cert, key, "", q)
    assert code == 200, body
    expected = [v for v in everything["metadata"] if want(v)]
    same(body["metadata"], expected)
    # recursion=0: the URLs of the same volumes
    code, urls = via(cert, key, "", urllib.parse.urlencode({"all-projects": "true", "filter": flt}))
    assert code == 200 and len(urls["metadata"]) == len(expected)
    assert all(f"/storage-pools/{v['pool']}/" in u for u, v in zip(urls["metadata"], body["metadata"]))


@pytest.mark.parametrize("vtype,query,status,error", [
    ("", "filter=name+eq", 500, "Invalid filter: clause has no value"),
    ("", "filter=name+eq+va+xor+name+eq+vb", 500, "Invalid filter: invalid clause composition"),
    ("", "filter=pool+eq+pool%2A%2A", 400,  # a pattern RE2 does not compile (native compares the name): said, not guessed
     'Invalid filter: the pool pattern "pool**" is not supported by this gateway: a repetition of nothing or of a repetition'),
    ("", "filter=pool+eq+%28%3Fi%29pool1", 400, None),  # RE2's flags: POSIX has none
    ("bogus", "", 400, "Invalid storage volume type name"),  # as LXD words it (6.1; 5.0.2 on a pool's list)
    ("", "project=vap2&all-projects=true", 400, "Cannot specify a project when requesting all projects"),
    ("", "project=%ff", 400, "The project in the request is not valid UTF-8"),
    ("", "filter=name+eq+%ff", 400, "The filter in the request is not valid UTF-8"),
    ("", "project=nosuch", 404, "Project not found"),  # a member's answer, relayed
    ("", "target=nosuch", 404, "Cluster member not found"),
])
def test_errors(volumes, vtype, query, status, error):
    cert, key = volumes
    code, body = via(cert, key, vtype, query)
    assert code == status, body
    assert body["type"] == "error" and body["error_code"] == status, body
    if error is not None:
        assert body["error"] == error
    if status == 404 or "clause" in (error or "") or vtype == "bogus":  # what a member says on its own list
        dcode, direct = direct_list(cert, key, vtype, query)
        assert (dcode, direct["error"]) == (code, body["error"])


@pytest.mark.parametrize("who", ["no certificate", "unknown certificate"])
def test_a_caller_the_cluster_does_not_trust_is_refused_as_for_any_list(volumes, tmp_path, who):
    """natively every list answers such a caller 403 "not authorized" (LXD 5.0.2 has no /1.0/storage-volumes: it would
    say 404); the gateway answers that itself, as LXD answers the same caller the pools' list"""
    crt, key = (None, None) if who == "no certificate" else make_cert(tmp_path, "va-stranger")
    dcode, direct = curl(f"{DIRECT}/1.0/storage-pools", crt, key)
    assert (dcode, direct["error"]) == (403, "not authorized"), direct
    for vtype, query in (("", ""), ("custom", "recursion=1&all-projects=true"), ("nosuch", "project=%ff")):
        code, body = via(crt, key, vtype, query)
        assert code == 403 and body == direct, (who, vtype, query, body)


def test_restricted_client(gateway, volumes, tmp_path):
    """a client restricted to vap2 sees through the gateway what LXD shows it on each pool: vap2's volumes only"""
    crt, key = make_cert(tmp_path, "va-restricted")
    admin_add(crt, "va-restricted", restricted=True, projects=["vap2"])
    try:
        gateway.wait_trusted(crt, key)
        for query in ("project=vap2", "recursion=1&project=vap2", "recursion=1&project=vap2&filter=name+eq+vp"):
            code, body = via(crt, key, "", query)
            dcode, direct = direct_list(crt, key, "", query)
            assert (code, dcode) == (200, 200), (query, body, direct)
            same(body["metadata"], direct)
            names = {(v if isinstance(v, str) else v["name"]) for v in body["metadata"]}
            assert names and all("vap2" in n or n in ("vc", "vp") for n in names), names
        # another project, or all of them (LXD 5.0.2 refuses a restricted client all-projects)
        for query in ("", "recursion=1&project=default", "recursion=1&all-projects=true"):
            code, body = via(crt, key, "", query)
            dcode, direct = direct_list(crt, key, "", query)
            assert code == dcode == 403 and body["error"] == direct["error"], (query, body, direct)
    finally:
        admin_remove(fingerprint(crt))


def test_incus(incus, volumes):
    """incus 6.0.4 has no list without a pool ("Missing pool name", said before asking anything); what it sends with
    a pool passes through, and `incus query` reads the merged list"""
    r = incus("storage", "volume", "list", "gw:", "--format", "csv", check=False)
    assert r.returncode != 0 and "Missing pool name" in r.stderr
    for pool in POOLS:
        r = incus("storage", "volume", "list", f"gw:{pool}", "--format", "csv", "-c", "n")
        assert sorted(r.stdout.split()) == sorted(n for p, pr, n, _ in VOLUMES if p == pool and pr == "default")
    r = incus("query", "gw:/1.0/storage-volumes?recursion=1&all-projects=true")
    got = sorted((v["pool"], v["project"], v["name"], v["location"]) for v in json.loads(r.stdout))
    assert got == sorted(VOLUMES)


def test_lxc(lxc, volumes):
    """lxc 5.0.2 has no list without a pool (`storage volume list` needs one, said before asking anything);
    `lxc query` reads the merged list, as the per-pool lists have it"""
    r = lxc.run("storage", "volume", "list", "gw:", "--format", "csv", check=False)
    assert r.returncode != 0 and "Missing pool name" in r.stderr, r.stderr
    r = lxc.run("query", "gw:/1.0/storage-volumes?recursion=1&all-projects=true")
    got = sorted((v["pool"], v["project"], v["name"], v["location"]) for v in json.loads(r.stdout))
    assert got == sorted(VOLUMES)
    r = lxc.run("query", "gw:/1.0/storage-volumes/custom?project=vap2")
    assert sorted(json.loads(r.stdout)) == sorted(f"/1.0/storage-pools/{p}/volumes/custom/{n}?project=vap2&target={m}"
                                                  for p, pr, n, m in VOLUMES if pr == "vap2")
