"""Trust-boundary issue, the "rights" half: whatever a caller sends, through the gateway it gets exactly what LXD 5.0.2
answers that caller directly, and it can never change the gateway's own shadow identities (real cluster).

LXD 5.0.2 facts these tests rely on (seen on the test cluster, see the report of the issue):
- a non-admin certificate may PATCH/PUT `projects` of ANY trust-store entry (only name/restricted/type are checked),
  and replace its OWN entry's certificate; directly that is LXD's own (defective) behaviour, but through the gateway
  the shadow entries (`lxd-gateway:*`) must never change: a restricted client reaching LXD through the gateway must
  not be able to do more than it can directly, and the shadow's rights are those of every client mapped to it;
- a certificate past its notAfter is `auth: untrusted`; LXD refuses to trust one that is expired or not yet valid
  ("The provided certificate isn't valid yet"), so a not-yet-valid entry can only appear through the database;
- a `metrics` certificate restricted to projects gets /1.0/metrics only with ?project= one of its projects;
- project names may contain a comma.
"""
import base64
import concurrent.futures
import datetime
import http.client
import json
import os
import ssl
import subprocess
import time
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import CLUSTER_DIR, METRICS_ADDR, member_lxc
from helpers import curl, sh

DIRECT = "https://127.0.0.11:8443"
HOST_DIRECT = ("127.0.0.11", 8443)
HOST_GW = ("127.0.0.1", 8443)
CALL_TIMEOUT = 10  # seconds for one API call: LXD 5.0.2 has been seen to hang on certificate updates
COMMA = "pa,pb"
EXPIRES_IN = 20  # seconds the expiring certificate is valid once made (LXD refuses to trust an expired one)


# ---- certificates and the trust store ----

def make_cert(directory, name, not_before=None, not_after=None):
    """A self-signed EC certificate with the given validity (default: valid now, for 30 days)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = not_before or now - datetime.timedelta(minutes=5)
    not_after = not_after or now + datetime.timedelta(days=30)
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA384()))
    crt, keyf = os.path.join(str(directory), f"{name}.crt"), os.path.join(str(directory), f"{name}.key")
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyf, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return crt, keyf


def fingerprint(crt):
    with open(crt, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).fingerprint(hashes.SHA256()).hex()


def der_b64(pem):
    return base64.b64encode(x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)).decode()


def store():
    """The cluster's trust store as its admin sees it: fingerprint -> the settings that matter."""
    out = member_lxc("node1", "query", "/1.0/certificates?recursion=1").stdout
    return {c["fingerprint"]: {k: c.get(k) for k in ("name", "type", "restricted", "projects", "certificate")}
            for c in json.loads(out)}


def admin_add(crt, name, type="client", restricted=False, projects=()):
    """Trusts `crt` through the API (lxc's --projects splits on commas: a comma-named project needs the API)."""
    with open(crt) as f:
        pem = f.read()
    body = {"name": name, "type": type, "restricted": restricted, "projects": list(projects), "certificate": der_b64(pem)}
    member_lxc("node1", "query", "-X", "POST", "-d", json.dumps(body), "/1.0/certificates")


def admin_remove(fp):
    member_lxc("node1", "query", "-X", "DELETE", f"/1.0/certificates/{fp}", check=False)


def sql_trust(fp, name, pem, certdir):
    """Puts an unrestricted client certificate into the trust store through the cluster database (LXD refuses expired
    and not-yet-valid ones through the API), then makes every member re-read its trust cache: they do on each
    certificate added or removed (notifications)."""
    sh(["env", f"LXD_DIR={CLUSTER_DIR}/node1", "lxd", "sql", "global",
        f"INSERT INTO certificates (fingerprint, type, name, certificate, restricted) VALUES ('{fp}', 1, '{name}', '{pem}', 0)"],
       timeout=30)
    poke, _ = make_cert(certdir, "cache-poke")
    member_lxc("node1", "config", "trust", "add", poke)
    admin_remove(fingerprint(poke))


def restore(before, keep=()):
    """Puts the trust store back to `before` (entries that changed are PUT back, entries that vanished are re-added,
    entries that appeared are removed, except fingerprints in `keep`). Returns the fingerprints that had changed."""
    now = store()
    changed = sorted({fp for fp in before if now.get(fp) != before[fp]} | {fp for fp in now if fp not in before and fp not in keep})
    for fp in changed:
        e = before.get(fp)
        if fp in now and e is not None and now[fp]["certificate"] == e["certificate"]:
            body = dict(name=e["name"], type=e["type"], restricted=e["restricted"], projects=e["projects"] or [])
            member_lxc("node1", "query", "-X", "PUT", "-d", json.dumps(body), f"/1.0/certificates/{fp}")
            continue
        if fp in now:
            admin_remove(fp)
        if e is not None:
            body = dict(name=e["name"], type=e["type"], restricted=e["restricted"], projects=e["projects"] or [],
                        certificate=der_b64(e["certificate"]))
            r = member_lxc("node1", "query", "-X", "POST", "-d", json.dumps(body), "/1.0/certificates", check=False)
            if r.returncode != 0 and ("expired" in r.stderr or "valid yet" in r.stderr) and not e["restricted"]:
                sql_trust(fp, e["name"], e["certificate"], RESTORE_DIR)
            else:
                assert r.returncode == 0, f"cannot restore {e['name']}: {r.stderr}"
    if changed:
        time.sleep(1.5)  # the gateway's mirror follows the certificate events
    return changed


RESTORE_DIR = "/tmp"  # set to the module's certificate directory by the `certdir` fixture


def own_shadows(gateway):
    """Fingerprints of the shadow key pairs this gateway made (its state dir)."""
    d = os.path.join(gateway.state, "shadows")
    return {fingerprint(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".crt")} if os.path.isdir(d) else set()


def shadow_entry(gateway, name):
    """(fingerprint, entry) of the gateway's shadow trusted under `name`, or (None, None)."""
    mine = own_shadows(gateway)
    found = [(fp, e) for fp, e in store().items() if fp in mine and e["name"] == name]
    assert len(found) <= 1, found
    return found[0] if found else (None, None)


# ---- API calls, bounded ----

def call(base, method, path, crt=None, key=None, data=None, timeout=CALL_TIMEOUT):
    """(status, body); status 0 = no answer within `timeout` seconds (curl --max-time)."""
    return curl(base + path, crt, key, method=method, data=data, timeout=timeout)


def gist(path, code, body):
    """The part of an answer that must be the same direct and through the gateway."""
    if code == 0:
        return code, "no answer within %d s" % CALL_TIMEOUT
    if not isinstance(body, dict):  # /1.0/metrics is text
        return code, ("metrics text" if code == 200 and ("# EOF" in body or "# HELP" in body) else body[:200])
    meta = body.get("metadata")
    if path.split("?")[0] == "/1.0" and isinstance(meta, dict) and code == 200:
        return code, "auth=" + str(meta.get("auth"))  # the rest differs legitimately (addresses, certificate, ...)
    if path.split("?")[0] == "/1.0/operations" and code == 200:
        return code, "(list not compared: operations come and go between two calls)"
    if code // 100 == 2:
        if isinstance(meta, list):  # LXD does not order these lists
            meta = sorted(meta, key=lambda x: json.dumps(x, sort_keys=True))
        return code, json.dumps(meta, sort_keys=True)[:300]
    return code, body.get("error")


class Https:
    """A kept-alive HTTPS connection with a client certificate (stdlib), for the many small calls of the slot test."""

    def __init__(self, host, crt=None, key=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        if crt:
            ctx.load_cert_chain(crt, key)
        self.conn = http.client.HTTPSConnection(host[0], host[1], context=ctx, timeout=CALL_TIMEOUT)

    def __call__(self, method, path, data=None):
        body = json.dumps(data) if data is not None else None
        try:
            self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            r = self.conn.getresponse()
            text = r.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            raise AssertionError(f"{method} {path} on {self.conn.host}:{self.conn.port}: no answer ({e!r})")
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text

    def close(self):
        self.conn.close()


# ---- fixtures ----

@pytest.fixture(scope="module")
def certdir(tmp_path_factory):
    global RESTORE_DIR
    RESTORE_DIR = tmp_path_factory.mktemp("trust-boundary")
    return RESTORE_DIR


@pytest.fixture(scope="module")
def expiring(certdir):
    """A client certificate trusted while valid, which expires EXPIRES_IN s after the module starts (first use)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    not_after = now + datetime.timedelta(seconds=EXPIRES_IN)
    crt, key = make_cert(certdir, "expiring", not_after=not_after)
    member_lxc("node1", "config", "trust", "add", crt, "--name", "tb-expiring")
    yield crt, key, not_after.timestamp()
    admin_remove(fingerprint(crt))


def wait_expired(expiring):
    left = expiring[2] + 2 - time.time()
    if left > 0:
        time.sleep(left)


@pytest.fixture(scope="module", autouse=True)
def projects(expiring):  # `expiring` first: its clock runs while the other tests run
    names = ["p1", "pa", "pb", COMMA]
    for p in names:
        member_lxc("node1", "project", "create", p, check=False)
    yield names
    for p in names:
        member_lxc("node1", "project", "delete", p, check=False)


@pytest.fixture
def restricted(certdir, gateway):
    """Factory: a fresh client certificate trusted restricted to `projects` (removed after the test)."""
    made = []

    def make(name, projects, type="client"):
        crt, key = make_cert(certdir, name)
        admin_add(crt, name, type=type, restricted=True, projects=projects)
        made.append(fingerprint(crt))
        if type == "client":
            gateway.wait_trusted(crt, key)
        else:
            time.sleep(2)  # a metrics certificate looks untrusted on /1.0: give the mirror a read or two
        return crt, key

    yield make
    for fp in made:
        admin_remove(fp)


# ---- 1. a restricted client cannot rewrite the gateway's own shadow entry ----

def test_restricted_client_cannot_rewrite_shadow_entry(gateway, restricted, certdir):
    """Client restricted to p1: DELETE / PATCH {restricted:false} / PATCH {projects:[default]} / PUT with a second
    certificate of its own, on the shadow's entry and on its own entry, through the gateway and directly.
    The shadow entry `lxd-gateway:p1` must stay exactly as it was after every call through the gateway."""
    crt, key = restricted("tb-r1", ["p1"])
    other_crt, _ = make_cert(certdir, "tb-r1-second")  # "its own" second certificate
    with open(other_crt) as f:
        other_pem = f.read()
    code, body = call(gateway.url, "GET", "/1.0/instances?project=p1", crt, key)
    assert code == 200, body  # the shadow for p1 now exists
    sfp, saved = shadow_entry(gateway, "lxd-gateway:p1")
    assert saved is not None, "no shadow entry lxd-gateway:p1 after a restricted request"
    own = fingerprint(crt)
    before = store()

    problems, rows = [], []
    for target, tname in ((sfp, "shadow"), (own, "own")):
        t_entry = before[target]
        put = {"name": t_entry["name"], "type": t_entry["type"], "restricted": t_entry["restricted"],
               "projects": t_entry["projects"], "certificate": other_pem}
        for method, data in (("DELETE", None), ("PATCH", {"restricted": False}), ("PATCH", {"projects": ["default"]}),
                             ("PUT", put)):
            what = f"{method} /1.0/certificates/<{tname}> {json.dumps(data)[:60] if data and method != 'PUT' else ''}"
            g = call(gateway.url, method, f"/1.0/certificates/{target}", crt, key, data)
            after_g = store()
            if after_g.get(sfp) != saved:
                problems.append(f"{what}: through the gateway the shadow entry became {after_g.get(sfp)!r:.300} "
                                f"(answer {g[0]} {gist('', *g)[1]!r})")
            g_changed = restore(before)
            d = call(DIRECT, method, f"/1.0/certificates/{target}", crt, key, data)
            d_changed = restore(before)
            gg, dg = gist("", *g), gist("", *d)
            rows.append((what, dg, d_changed, gg, g_changed))
            if d[0] // 100 != 2:
                # LXD refuses it directly: the gateway must refuse it the same way and change nothing
                if gg != dg or g_changed:
                    problems.append(f"{what}: direct {dg} (changed {d_changed}), gateway {gg} (changed {g_changed})")
            elif target == sfp:
                # LXD 5.0.2 lets any non-admin change any entry's projects: directly the shadow would change. The
                # gateway must not let its own identity be rewritten: it must refuse (4xx), changing nothing.
                if g[0] // 100 != 4 or g_changed:
                    problems.append(f"{what}: gateway answered {gg} (changed {g_changed}); LXD directly: {dg} "
                                    f"(changed {d_changed}); must be a refusal that changes nothing")
            else:
                # the caller's own entry, which LXD 5.0.2 lets it change: either the very same answer and effect
                # (judged as LXD judges the caller), or a refusal that changes nothing
                same = gg == dg and g_changed == d_changed
                refused = g[0] // 100 == 4 and not g_changed
                if not (same or refused):
                    problems.append(f"{what}: direct {dg} (changed {d_changed}), gateway {gg} (changed {g_changed})")
    print("\n".join(map(str, rows)))
    assert not problems, "\n".join(problems)


def test_drifted_shadow_entry_is_repaired(gateway, restricted):
    """The cluster admin (or anyone LXD lets) changes the shadow entry: within ~35 s the gateway repairs or deletes
    it, says so loudly, and the restricted client still gets p1 only."""
    crt, key = restricted("tb-r2", ["p1"])
    assert call(gateway.url, "GET", "/1.0/instances?project=p1", crt, key)[0] == 200
    sfp, saved = shadow_entry(gateway, "lxd-gateway:p1")
    assert saved is not None
    before = store()
    try:
        for drift in ({"projects": ["default"]}, {"restricted": False}):
            since = len(gateway.logtext())
            member_lxc("node1", "query", "-X", "PATCH", "-d", json.dumps(drift), f"/1.0/certificates/{sfp}")
            # the gateway follows the trust store's events and may have put the entry back before this read: then
            # its error line shows the change was seen (the log check below asks for it in any case)
            assert store()[sfp] != saved or "SHADOW IDENTITY CHANGED" in gateway.logtext()[since:], \
                "the admin PATCH did not change the shadow entry"
            deadline = time.time() + 35
            while time.time() < deadline:
                now = store().get(sfp)
                if now is None or now == saved:
                    break
                time.sleep(1)
            now = store().get(sfp)
            assert now is None or now == saved, f"shadow entry still drifted ({drift}) 35 s later: {now!r:.400}"
            log = gateway.logtext()[since:]
            loud = [l for l in log.splitlines() if ("level=warn" in l or "level=error" in l)
                    and (sfp in l or "p1" in l) and "shadow" in l]
            assert loud, "the gateway did not log the repair at warn/error level:\n" + log[-3000:]
            for path in ("/1.0/instances?project=p1", "/1.0/instances?project=default", "/1.0/projects"):
                d, g = call(DIRECT, "GET", path, crt, key), call(gateway.url, "GET", path, crt, key)
                assert gist(path, *g) == gist(path, *d), (drift, path, gist(path, *d), gist(path, *g))
    finally:  # never leave a drifted shadow to the tests after this one
        if store().get(sfp) not in (None, saved):
            restore(before, keep=own_shadows(gateway))


# ---- 1b. TLS sessions toward members are resumed, each by its own identity ----

def resumed_handshakes():
    text = sh(["curl", "-s", "--max-time", "5", f"http://{METRICS_ADDR}/metrics"]).stdout
    return sum(int(line.split()[-1]) for line in text.splitlines()
               if line.startswith('lxd_gateway_member_tls_handshakes_total{resumed="true"}'))


def test_resumed_member_sessions_stay_with_their_identity(gateway, restricted, env):
    """A resumed TLS session carries the client certificate the member authenticated: the admin identity's sessions
    must never serve the restricted client's shadow, nor the reverse. Bursts of parallel requests open new member
    connections (they resume), the admin's burst first each time; every answer is the caller's own view."""
    crt, key = restricted("tb-resume", ["p1"])
    admin = (env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    path = "/1.0/projects"
    want = {who: gist(path, *call(DIRECT, "GET", path, *pair)) for who, pair in (("admin", admin), ("restricted", (crt, key)))}
    assert want["admin"] != want["restricted"], want
    before = resumed_handshakes()
    problems = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        for burst in (4, 8, 12):
            for who, pair in (("admin", admin), ("restricted", (crt, key))):
                answers = list(pool.map(lambda _: gist(path, *call(gateway.url, "GET", path, *pair)), range(burst)))
                problems += [(who, burst, a) for a in answers if a != want[who]]
    assert not problems, problems[:5]
    assert resumed_handshakes() > before, "no member session was resumed: the test proves nothing"


# ---- 2. expired and not-yet-valid client certificates ----

def test_expired_certificate_has_no_rights(gateway, expiring):
    crt, key, _ = expiring
    wait_expired(expiring)
    for path in ("/1.0", "/1.0/instances", "/1.0/projects"):
        d, g = call(DIRECT, "GET", path, crt, key), call(gateway.url, "GET", path, crt, key)
        assert gist(path, *d) != (200, "auth=trusted"), "LXD itself still trusts the expired certificate"
        assert gist(path, *g) == gist(path, *d), (path, "direct", gist(path, *d), "gateway", gist(path, *g))


def test_certificate_that_expires_during_a_connection_loses_its_rights_on_it(gateway, certdir):
    """The gateway reads a connection's certificate once (its fingerprint and validity period), but judges the period
    on every request: a keep-alive connection opened while the certificate was valid is untrusted once it expired."""
    not_after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=12)
    crt, key = make_cert(certdir, "expires-midway", not_after=not_after)
    member_lxc("node1", "config", "trust", "add", crt, "--name", "tb-expires-midway")
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(crt, key)
        conn = http.client.HTTPSConnection(*HOST_GW, context=ctx, timeout=CALL_TIMEOUT)

        def auth():
            conn.request("GET", "/1.0")
            return json.loads(conn.getresponse().read())["metadata"]["auth"]

        # one connection, kept busy (an idle one would be closed) until just before the certificate expires; the
        # gateway's trust mirror learns of the new entry meanwhile
        answers = [auth()]
        sock = conn.sock
        while time.time() < not_after.timestamp() - 1.5:
            time.sleep(0.5)
            answers.append(auth())
        assert answers[-1] == "trusted", f"the certificate was not trusted before it expired: {answers}"
        time.sleep(max(0.0, not_after.timestamp() + 1.5 - time.time()))
        assert auth() == "untrusted", "an expired certificate kept its rights on a connection opened before"
        assert conn.sock is sock, "the answers came on more than one connection: the test proves nothing"
        conn.close()
    finally:
        admin_remove(fingerprint(crt))


@pytest.fixture(scope="module")
def not_yet_valid(certdir):
    """A client certificate valid from tomorrow, in the trust store. LXD 5.0.2 refuses to trust it through the API,
    so it is written into the cluster database (`lxd sql global`), then the members' trust caches are refreshed by
    adding and removing another certificate (each member re-reads the store on those notifications)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    crt, key = make_cert(certdir, "not-yet-valid", not_before=now + datetime.timedelta(days=1),
                         not_after=now + datetime.timedelta(days=30))
    r = member_lxc("node1", "config", "trust", "add", crt, check=False)
    assert r.returncode != 0 and "isn't valid yet" in r.stderr, ("LXD 5.0.2 was expected to refuse it", r.stdout, r.stderr)
    fp = fingerprint(crt)
    with open(crt) as f:
        sql_trust(fp, "tb-not-yet-valid", f.read(), certdir)
    assert fp in store()
    time.sleep(1.5)
    yield crt, key
    admin_remove(fp)


def test_not_yet_valid_certificate_has_no_rights(gateway, not_yet_valid):
    crt, key = not_yet_valid
    for path in ("/1.0", "/1.0/instances", "/1.0/projects"):
        d, g = call(DIRECT, "GET", path, crt, key), call(gateway.url, "GET", path, crt, key)
        assert gist(path, *d) != (200, "auth=trusted"), "LXD itself trusts the not-yet-valid certificate"
        assert gist(path, *g) == gist(path, *d), (path, "direct", gist(path, *d), "gateway", gist(path, *g))


# ---- 3. a metrics certificate restricted to projects ----

def test_restricted_metrics_certificate_keeps_its_restriction(gateway, restricted):
    crt, key = restricted("tb-metrics-p1", ["p1"], type="metrics")
    problems = []
    for path in ("/1.0/metrics", "/1.0/metrics?project=p1", "/1.0/metrics?project=default", "/1.0/metrics?project=pa"):
        d, g = gist(path, *call(DIRECT, "GET", path, crt, key)), gist(path, *call(gateway.url, "GET", path, crt, key))
        if d != g:
            problems.append((path, "direct", d, "gateway", g))
    assert not problems, problems


# ---- 4. a project whose name holds a comma ----

def test_comma_in_project_name_is_one_project(gateway, restricted):
    projects = json.loads(member_lxc("node1", "query", "/1.0/projects").stdout)
    assert "/1.0/projects/" + urllib.parse.quote(COMMA, safe="") in projects or any(COMMA in urllib.parse.unquote(urllib.parse.unquote(p)) for p in projects), projects
    crt, key = restricted("tb-comma", [COMMA])
    problems = []
    for path in ("/1.0/instances?project=pa", "/1.0/instances?project=pb", "/1.0/instances?project=pa%2Cpb",
                 "/1.0/projects", "/1.0/instances?project=default"):
        d, g = gist(path, *call(DIRECT, "GET", path, crt, key)), gist(path, *call(gateway.url, "GET", path, crt, key))
        if d != g:
            problems.append((path, "direct", d, "gateway", g))
    assert not problems, problems


# ---- 6. trust-token redemption only redeems certificate-add tokens ----

def forged_token(secret):
    exp = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tok = {"client_name": "tb-forged", "fingerprint": "00" * 32, "addresses": ["127.0.0.1:8443"], "secret": secret,
           "expires_at": exp}
    return base64.b64encode(json.dumps(tok).encode()).decode()


def running_ops():
    out = member_lxc("node1", "query", "/1.0/operations?recursion=1").stdout
    return {op["id"]: op for op in (json.loads(out).get("running") or [])}


def test_other_token_operations_are_not_redeemed(gateway, certdir, env):
    """A cluster-join token and an image-download token are `token`-class operations too: a certificate-add-shaped
    token carrying their secret must get LXD's own answer, and neither operation may be cancelled."""
    crt, key = make_cert(certdir, "tb-token-caller")  # untrusted
    before = store()
    member_lxc("node1", "cluster", "revoke-token", "node9", check=False)
    join = member_lxc("node1", "cluster", "add", "node9", "--quiet").stdout.strip().splitlines()[-1]
    try:
        join_secret = json.loads(base64.b64decode(join))["secret"]
        img = json.loads(member_lxc("node1", "query", "/1.0/images").stdout)[0]
        out = json.loads(member_lxc("node1", "query", "-X", "POST", img + "/secret").stdout)
        img_secret, img_op = out["metadata"]["secret"], out["id"]
        join_op = [i for i, op in running_ops().items() if (op.get("metadata") or {}).get("secret") == join_secret]
        assert len(join_op) == 1
        problems = []
        for kind, secret, op in (("cluster join", join_secret, join_op[0]), ("image download", img_secret, img_op)):
            body = {"type": "client", "password": forged_token(secret)}
            d = call(DIRECT, "POST", "/1.0/certificates", crt, key, body)
            assert op in running_ops(), f"LXD itself consumed the {kind} token"
            g = call(gateway.url, "POST", "/1.0/certificates", crt, key, body)
            assert gateway.proc.poll() is None, f"the gateway died on a {kind} token: {gateway.logtext()[-3000:]}"
            if op not in running_ops():
                problems.append(f"{kind} token operation {op} was cancelled through the gateway "
                                f"(gateway answered {gist('', *g)})")
            if gist("", *g) != gist("", *d):
                problems.append(f"{kind}: direct {gist('', *d)}, gateway {gist('', *g)}")
        if "node9" not in member_lxc("node1", "cluster", "list-tokens", "--format", "csv").stdout:
            problems.append("`lxc cluster list-tokens` no longer lists the join token for node9")
        after = {fp: e for fp, e in store().items() if fp not in own_shadows(gateway)}
        if after != {fp: e for fp, e in before.items() if fp not in own_shadows(gateway)}:
            problems.append("the trust store changed: " + str(set(after) ^ set(before)))
        assert not problems, "\n".join(problems)
    finally:
        member_lxc("node1", "cluster", "revoke-token", "node9", check=False)
        restore(before, keep=own_shadows(gateway))


# ---- 7. the parity table: every kind of caller x reads and writes ----

READS = ["/1.0", "/1.0/instances", "/1.0/instances?project=p1", "/1.0/instances?project=default",
         "/1.0/instances?project=pa", "/1.0/instances?project=pa%2Cpb", "/1.0/projects", "/1.0/certificates",
         "/1.0/metrics", "/1.0/metrics?project=p1", "/1.0/metrics?project=default", "/1.0/storage-pools",
         "/1.0/networks", "/1.0/images", "/1.0/cluster/members", "/1.0/operations", "/1.0/storage-pools/pool1/volumes"]


def cell(text):
    return str(text)[:80].replace("|", "\\|")


def test_parity_table(gateway, certdir, restricted, expiring, not_yet_valid, env):
    callers = {"unrestricted": (env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])}
    callers["restricted p1"] = restricted("tb-t-p1", ["p1"])
    callers["restricted pa,pb"] = restricted("tb-t-comma", [COMMA])
    callers["metrics p1"] = restricted("tb-t-metrics", ["p1"], type="metrics")
    callers["expired"] = expiring[:2]
    callers["not yet valid"] = not_yet_valid
    callers["unknown"] = (env["LXDGW_UNTRUSTED_CERT"], env["LXDGW_UNTRUSTED_KEY"])
    callers["none"] = (None, None)
    wait_expired(expiring)
    throwaway_crt, _ = make_cert(certdir, "tb-throwaway")
    throwaway = fingerprint(throwaway_crt)

    def ensure_throwaway():
        if throwaway not in store():
            admin_add(throwaway_crt, "tb-throwaway")

    ensure_throwaway()
    for crt, key in callers.values():  # every shadow this table needs exists before the store is recorded
        call(gateway.url, "GET", "/1.0/instances?project=p1", crt, key)
        call(gateway.url, "GET", "/1.0/metrics?project=p1", crt, key)
    time.sleep(1.5)
    before = store()
    base = {fp: e for fp, e in before.items() if fp != throwaway}

    rows, mismatches = [], []
    try:
        for caller, (crt, key) in callers.items():
            own = fingerprint(crt) if crt else fingerprint(env["LXDGW_UNTRUSTED_CERT"])
            writes = [("PATCH", f"/1.0/certificates/{own}", {"name": "tb-renamed"}, "PATCH /1.0/certificates/<own> {name}"),
                      ("DELETE", f"/1.0/certificates/{throwaway}", None, "DELETE /1.0/certificates/<throwaway>"),
                      ("POST", "/1.0/certificates", {"type": "client", "password": "wrong"}, "POST /1.0/certificates bad password")]
            for method, path, data, label in [("GET", p, None, "GET " + p) for p in READS] + writes:
                answers = []
                for base_url in (DIRECT, gateway.url):
                    if method != "GET":
                        ensure_throwaway()
                    a = gist(path, *call(base_url, method, path, crt, key, data))
                    effect = ""
                    if method != "GET":
                        now = store()
                        effect = ("throwaway deleted; " if throwaway not in now else "") + \
                            ", ".join(f"{'changed' if fp in base else 'added'} {now.get(fp, {}).get('name') or base.get(fp, {}).get('name')}"
                                      for fp in sorted(set(now) | set(base)) if fp != throwaway and now.get(fp) != base.get(fp))
                        restore(before)
                    answers.append(a + (effect,))
                d, g = answers
                rows.append(f"| {caller} | {label} | {d[0]} | {g[0]} | {cell(d[1])} | {cell(g[1])} | "
                            f"{d[2] or '-'} | {g[2] or '-'} | {'same' if d == g else 'DIFFERENT'} |")
                if d != g:
                    mismatches.append((caller, method, label, d, g))
    finally:
        admin_remove(throwaway)
    table = ("| caller | request | direct | gateway | direct body | gateway body | direct effect | gateway effect | |\n"
             "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    os.makedirs(os.path.join(os.environ["LXDGW_TOP"], "build"), exist_ok=True)
    with open(os.path.join(os.environ["LXDGW_TOP"], "build", "parity-table.md"), "w") as f:
        f.write(table)
    after = {fp: e for fp, e in store().items() if fp != throwaway}
    assert after == base, "the trust store changed: " + str(set(after) ^ set(base))
    assert not mismatches, "\n".join(map(str, mismatches))


# ---- 5. shadow slots are reclaimed (last: on a gateway that never reclaims them, they are all used up after it) ----

SLOT_PROJECTS = [f"tbs{i}" for i in range(9)]


def project_sets(n):
    """n distinct project sets over SLOT_PROJECTS: all singles, then pairs, then triples."""
    import itertools
    sets = []
    for size in (1, 2, 3):
        sets += [list(c) for c in itertools.combinations(SLOT_PROJECTS, size)]
    return sets[:n]


def test_shadow_slots_are_reclaimed(gateway, certdir, env):
    """70 distinct restricted clients in two waves (the first wave's certificates are removed, so the gateway no
    longer needs their shadows), each one GET through the gateway: each answers as LXD does directly, never 503."""
    admin = Https(HOST_DIRECT, env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    sets = project_sets(70)
    made = {}
    try:
        for p in SLOT_PROJECTS:
            code, body = admin("POST", "/1.0/projects", {"name": p, "config": {"features.images": "false",
                                                                             "features.profiles": "false"}})
            assert code in (200, 201) or "already exists" in str(body), body
        problems = []

        def wave(indexes):
            for i in indexes:
                crt, key = make_cert(certdir, f"tb-slot{i}")
                with open(crt) as f:
                    pem = f.read()
                code, body = admin("POST", "/1.0/certificates", {"name": f"tb-slot{i}", "type": "client", "restricted": True,
                                                                 "projects": sets[i], "certificate": der_b64(pem)})
                assert code in (200, 201), body
                made[i] = (crt, key, fingerprint(crt))
            gateway.wait_trusted(*made[indexes[-1]][:2])
            for i in indexes:
                crt, key, _ = made[i]
                path = "/1.0/instances?project=" + sets[i][0]
                g, d = Https(HOST_GW, crt, key), Https(HOST_DIRECT, crt, key)
                ga, da = gist(path, *g("GET", path)), gist(path, *d("GET", path))
                g.close(), d.close()
                if ga != da:
                    problems.append((i, sets[i], "direct", da, "gateway", ga))

        first = list(range(35))
        wave(first)
        for i in first:  # these clients are gone: their shadows are needed no more
            admin("DELETE", f"/1.0/certificates/{made.pop(i)[2]}")

        def wave_shadows():  # the gateway's shadow entries for these projects (whatever it names them)
            mine = own_shadows(gateway)
            return [e["name"] for fp, e in store().items() if fp in mine and any(p.startswith("tbs") for p in e["projects"] or [])]

        deadline = time.time() + 75
        while time.time() < deadline and wave_shadows():
            time.sleep(3)
        left = wave_shadows()
        assert not left, f"{len(left)} shadows of gone clients still trusted 75 s later"
        wave(list(range(35, 70)))
        assert not problems, f"{len(problems)} of 70 differ, first: {problems[:3]}"
    finally:
        for crt, key, fp in made.values():
            admin("DELETE", f"/1.0/certificates/{fp}")
        for p in SLOT_PROJECTS:
            admin("DELETE", f"/1.0/projects/{p}")
        admin.close()
