"""The clients operators use, pylxd (Debian's python3-pylxd 2.2.10) and Ansible (Debian's ansible 7.7: community.general
6.6 lxd_container module, lxd inventory and connection plugins), against a member directly and through the gateway with
the same client certificate: every scenario runs on both endpoints, and the gateway's outcome must be the member's
(the same steps succeed, the same results). Names carry the run and the endpoint, so both runs and reruns never meet;
everything made is deleted by a finalizer."""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from conftest import member_lxc
from helpers import CALL_TIMEOUT, hung, sh

MEMBER_URL = "https://127.0.0.11:8443"
RUN = uuid.uuid4().hex[:6]
ENDPOINTS = ["member", "gateway"]

import pylxd
# pylxd 2.2.10 warns about every field LXD 5.0 has that its models lack, and about verify=False
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore:Unverified HTTPS request")


@pytest.fixture(scope="module", autouse=True)
def no_ca_bundle_override():
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on some machines) override a session's verify=False, so
    pylxd would check LXD's self-signed certificate against the system CAs; operators' pylxd code runs without them."""
    with pytest.MonkeyPatch.context() as mp:
        for v in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            mp.delenv(v, raising=False)
        yield


@pytest.fixture(scope="module")
def urls(request):
    """endpoint name -> URL; the gateway (conftest's) is started only when a gateway case runs."""

    class Urls(dict):
        def __missing__(self, name):
            assert name == "gateway"
            self[name] = request.getfixturevalue("gateway").url
            return self[name]

        def tls(self, name):
            """(the endpoint's address, the server certificate it presents)"""
            if name == "member":
                return "127.0.0.11", os.environ["LXDGW_CLUSTER_CERT"]
            return "127.0.0.1", os.path.join(request.getfixturevalue("gateway").state, "server.crt")

        def tmpdir(self, name):
            return str(request.getfixturevalue("tmp_path_factory").mktemp(name))

    return Urls(member=MEMBER_URL)


def pylxd_client(url):
    return pylxd.Client(url, cert=(os.environ["LXDGW_CLIENT_CERT"], os.environ["LXDGW_CLIENT_KEY"]), verify=False,
                        timeout=60)


class Outcomes:
    """Each scenario's outcome per endpoint, computed once: a gateway case compares its outcome with the member's,
    running the member's first if it has not run yet (so `-k gateway` alone still compares)."""

    def __init__(self, urls):
        self.urls, self.done = urls, {}

    def get(self, scenario, endpoint):
        key = (scenario.__name__, endpoint)
        if key not in self.done:
            self.done[key] = self.bounded(scenario, endpoint)
        return self.done[key]

    def bounded(self, scenario, endpoint):
        """runs `scenario` on `endpoint` within its `timeout` (CALL_TIMEOUT unless it says): pylxd's calls have their
        HTTP timeout, but its exec polls its operation until it ends and its websockets have none; SIGALRM interrupts
        whatever the scenario waits in (a subprocess.run it cuts short is killed)"""
        timeout = getattr(scenario, "timeout", CALL_TIMEOUT)

        def on_alarm(sig, frame):
            raise AssertionError(f"HUNG after {timeout} s: {scenario.__name__} on the {endpoint}")
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(timeout)
        try:
            return scenario(self.urls, endpoint, f"{RUN}-{endpoint[0]}")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)

    def check(self, scenario, endpoint):
        """The outcome on `endpoint`; on the gateway, asserted equal to the member's."""
        got = self.get(scenario, endpoint)
        if endpoint == "gateway":
            assert got == self.get(scenario, "member"), "the gateway's outcome differs from the member's"
        return got


@pytest.fixture(scope="module")
def outcomes(urls):
    return Outcomes(urls)


@pytest.fixture
def seen(request, endpoint):
    """On the gateway: a check that the gateway's log, since the test began, has a request by the test client's
    certificate whose log line contains each given text (so the client really went through it). On the member:
    nothing to check."""
    if endpoint != "gateway":
        return lambda *texts: None
    gw = request.getfixturevalue("gateway")
    since = len(gw.logtext())
    fp = sh(["openssl", "x509", "-in", os.environ["LXDGW_CLIENT_CERT"], "-noout", "-fingerprint", "-sha256"]).stdout
    fp = fp.split("=")[1].strip().replace(":", "").lower()

    def check(*texts):
        deadline = time.time() + 5  # access lines are written out in batches (GW_LOG_FLUSH_MS)
        while True:
            lines = [line for line in gw.logtext()[since:].splitlines() if f"fingerprint={fp} " in line]
            missing = [t for t in texts if not any(t in line for line in lines)]
            if not missing:
                return lines
            assert time.time() < deadline, f"no request by the client with {missing[0]!r} in the gateway's log"
            time.sleep(0.2)
    return check


def remove(kind, name):
    """Deletes what a scenario made and did not delete (a failed or cut-short step), once no task of the cluster is
    still on it (a create whose client stopped waiting would otherwise make it after the delete). `kind`: "instances"
    or "volumes"."""
    deadline = time.time() + 60
    while time.time() < deadline:
        ops = json.loads(member_lxc("node1", "query", "/1.0/operations?recursion=1").stdout)
        on_it = [o for o in ops.get("running") or [] if o.get("class") == "task" and
                 any(r.rstrip("/").split("/")[-1].split("?")[0] == name for rs in (o.get("resources") or {}).values()
                     for r in rs)]
        if not on_it:
            break
        time.sleep(0.5)
    if kind == "instances":
        member_lxc("node1", "delete", "-f", name, check=False)
    else:
        for node in ("node1", "node2", "node3"):
            member_lxc("node1", "storage", "volume", "delete", "pool1", name, "--target", node, check=False)


# ---- pylxd --------------------------------------------------------------------------------------------------------


def pylxd_connect(urls, endpoint, tag):
    c = pylxd_client(urls[endpoint])
    return {"trusted": c.trusted, "auth": c.host_info["auth"],
            "server_version": c.host_info["environment"]["server_version"],
            "storage": c.has_api_extension("storage")}


def wait(c, r):
    """waits for the operation of a raw pylxd call's answer, if it started one"""
    if r.json()["type"] == "async":
        c.operations.wait_for_operation(r.json()["operation"])


def pylxd_volumes(urls, endpoint, tag):
    """create, list, snapshot (pylxd 2.2.10 has no volume-snapshot model: through its raw `client.api` nodes, with the
    client's session and certificate), list snapshots, delete snapshot and volume."""
    c = pylxd_client(urls[endpoint])
    pool = c.storage_pools.get("pool1")
    name = f"pyv-{tag}"
    steps = []
    try:
        vol = pool.volumes.create({"name": name, "type": "custom", "config": {"user.client": "pylxd"}}, wait=True)
        steps.append(("created", vol.name.replace(tag, "TAG"), vol.type, vol.config.get("user.client")))
        # pylxd 2.2.10 takes a clustered LXD's "?target=<member>" for part of the name: kept as pylxd shows it, but
        # the member normalised (which member a create lands on is the receiving member's or the gateway's choice)
        listed = [re.sub(r"\?target=.*", "?target=M", v.name.replace(tag, "TAG"))
                  for v in pool.volumes.all() if v.type == "custom" and tag in v.name]
        steps.append(("listed", listed))
        snaps = pool.api.volumes.custom[name].snapshots
        wait(c, snaps.post(json={"name": "snap0"}))
        steps.append(("snapshots", [s.rsplit("/", 1)[-1] for s in snaps.get().json()["metadata"]]))
        wait(c, snaps["snap0"].delete())
        steps.append(("snapshots after delete", snaps.get().json()["metadata"]))
        pool.volumes.get("custom", name).delete()
        steps.append(("listed after delete", [v.name for v in pool.volumes.all() if tag in v.name]))
    finally:
        remove("volumes", name)  # only if a step failed
    return steps


def pylxd_containers(urls, endpoint, tag):
    """create (from the cluster's own busybox image), start, exec (exit code, stdout, stderr, stdin), stop, delete."""
    c = pylxd_client(urls[endpoint])
    name = f"pyc-{tag}"
    steps = []
    try:
        ct = c.containers.create({"name": name, "source": {"type": "image", "alias": "busybox"},
                                  "config": {"user.client": "pylxd"}}, wait=True)
        steps.append(("created", ct.status, ct.config.get("user.client")))
        ct.start(wait=True)
        ct.sync()
        steps.append(("started", ct.status))
        r = ct.execute(["sh", "-c", "echo out-through; echo err-through >&2; exit 3"])
        steps.append(("exec", r.exit_code, r.stdout, r.stderr))
        r = ct.execute(["cat"], stdin_payload="stdin-through\n")
        steps.append(("exec stdin", r.exit_code, r.stdout))
        ct.stop(wait=True, timeout=30, force=True)
        ct.sync()
        steps.append(("stopped", ct.status))
        ct.delete(wait=True)
        steps.append(("exists after delete", c.containers.exists(name)))
    finally:
        remove("instances", name)  # only if a step failed
    return steps


def pylxd_images(urls, endpoint, tag):
    c = pylxd_client(urls[endpoint])
    return sorted((i.fingerprint, sorted(a["name"] for a in i.aliases), i.public) for i in c.images.all())


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_pylxd_connect(outcomes, endpoint, seen):
    got = outcomes.check(pylxd_connect, endpoint)
    assert got == {"trusted": True, "auth": "trusted", "server_version": "5.0.2", "storage": True}
    seen("method=GET path=/1.0 status=200")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_pylxd_volumes(outcomes, endpoint, seen):
    got = outcomes.check(pylxd_volumes, endpoint)
    seen("method=POST path=/1.0/storage-pools/pool1/volumes/custom status=",
         "/snapshots status=202", "method=DELETE path=/1.0/storage-pools/pool1/volumes/custom/pyv-")
    assert got == [("created", "pyv-TAG", "custom", "pylxd"), ("listed", ["pyv-TAG?target=M"]),
                   ("snapshots", ["snap0"]), ("snapshots after delete", []), ("listed after delete", [])]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_pylxd_containers_and_exec(outcomes, endpoint, request, seen):
    since = len(request.getfixturevalue("gateway").logtext()) if endpoint == "gateway" else 0
    got = outcomes.check(pylxd_containers, endpoint)
    seen("method=POST path=/1.0/containers status=202", "/exec status=202", "method=DELETE path=/1.0/containers/pyc-")
    assert got == [("created", "Stopped", "pylxd"), ("started", "Running"),
                   ("exec", 3, "out-through\n", "err-through\n"), ("exec stdin", 0, "stdin-through\n"),
                   ("stopped", "Stopped"), ("exists after delete", False)]
    if endpoint == "gateway":
        # pylxd's ws4py websockets carry no client certificate (the operation's secret is their credential): anonymous
        # in the log; one per stream (stdin, stdout, stderr) of both execs, each upgraded (101)
        gw = request.getfixturevalue("gateway")
        deadline = time.time() + 5  # access lines are written out in batches (GW_LOG_FLUSH_MS)
        while True:
            ws = [line for line in gw.logtext()[since:].splitlines() if "/websocket?secret=redacted" in line]
            if len(ws) >= 6 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert len(ws) == 6 and all("status=101" in line for line in ws), ws


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_pylxd_image_list(outcomes, endpoint, seen):
    got = outcomes.check(pylxd_images, endpoint)
    seen("method=GET path=/1.0/images status=200")
    assert any("busybox" in aliases for _, aliases, _ in got), got


# ---- Ansible -------------------------------------------------------------------------------------------------------


def server_names(crt):
    """the DNS names of a server certificate's subjectAltName"""
    text = sh(["openssl", "x509", "-in", crt, "-noout", "-ext", "subjectAltName"]).stdout
    return [n.strip()[4:] for n in text.replace("\n", ",").split(",") if n.strip().startswith("DNS:")]


class Ansible:
    """ansible-playbook / ansible-inventory with everything in one temporary directory: ANSIBLE_CONFIG, HOME, temp dirs,
    collections path (empty: only the collections Debian ships, found on Python's path), no host key checks, the JSON
    callback; LXD_CONF for the lxc CLI the lxd connection plugin runs. community.general's LXD client verifies the
    server's certificate with Python's default context and no option to turn that off, as operators meet it: so the
    endpoint's own certificate is the only CA (SSL_CERT_FILE, an empty SSL_CERT_DIR), and the endpoint is named by a DNS
    name that certificate carries, resolved in a private /etc/hosts bind-mounted in a mount namespace of the commands
    (nothing in /etc is written)."""

    def __init__(self, d, url, ip, crt):
        self.d = d
        name = server_names(crt)[0]
        self.url = f"https://{name}:{url.rsplit(':', 1)[1]}"
        for sub in ("home", "tmp", "collections", "certs", "lxc-conf", "cp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write(f"127.0.0.1 localhost\n{ip} {name}\n")
        with open(os.path.join(d, "ansible.cfg"), "w") as f:
            f.write("[defaults]\n")
        shutil.copy(crt, os.path.join(d, "ca.crt"))
        shutil.copy(os.environ["LXDGW_CLIENT_CERT"], os.path.join(d, "lxc-conf", "client.crt"))
        shutil.copy(os.environ["LXDGW_CLIENT_KEY"], os.path.join(d, "lxc-conf", "client.key"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SSL_", "REQUESTS_", "CURL_"))}
        # ANSIBLE_REMOTE_TEMP too: the local connection's modules (lxd_container) would make ~/.ansible/tmp of the
        # user's real home
        self.env.update(HOME=f"{d}/home", ANSIBLE_CONFIG=f"{d}/ansible.cfg", ANSIBLE_LOCAL_TEMP=f"{d}/tmp",
                        ANSIBLE_REMOTE_TEMP=f"{d}/remote-tmp", ANSIBLE_COLLECTIONS_PATH=f"{d}/collections",
                        ANSIBLE_ROLES_PATH=f"{d}/roles",
                        ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
                        ANSIBLE_SSH_CONTROL_PATH_DIR=f"{d}/cp", ANSIBLE_PERSISTENT_CONTROL_PATH_DIR=f"{d}/cp",
                        ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1", ANSIBLE_GALAXY_SERVER_LIST="",
                        ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
                        ANSIBLE_INVENTORY_ENABLED="community.general.lxd",
                        SSL_CERT_FILE=f"{d}/ca.crt", SSL_CERT_DIR=f"{d}/certs", LXD_CONF=f"{d}/lxc-conf")
        self.run(["lxc", "remote", "add", "ep", self.url, "--accept-certificate"])
        with open(os.path.join(d, "inventory.lxd.yml"), "w") as f:
            json.dump({"plugin": "community.general.lxd", "url": self.url, "client_cert": f"{d}/lxc-conf/client.crt",
                       "client_key": f"{d}/lxc-conf/client.key"}, f)

    def run(self, cmd, timeout=180):
        """`cmd` with the private /etc/hosts; bounded"""
        full = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', os.path.join(self.d, "hosts"), *cmd]
        try:
            return subprocess.run(full, capture_output=True, text=True, input="", timeout=timeout, env=self.env)
        except subprocess.TimeoutExpired as e:
            raise hung(cmd, timeout, e) from None

    def playbook(self, name, plays):
        path = os.path.join(self.d, name)
        with open(path, "w") as f:
            json.dump(plays, f)  # JSON is YAML
        r = self.run(["ansible-playbook", "-i", os.path.join(self.d, "inventory.lxd.yml"), path])
        with open(path + ".out", "w") as f:  # for a failure's post-mortem
            f.write(r.stdout + r.stderr)
        try:
            out = json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"ansible-playbook {name} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        tasks = []
        for play in out["plays"]:
            for t in play["tasks"]:
                for host, res in t["hosts"].items():
                    tasks.append((t["task"]["name"], res))
        return r.returncode, tasks


def ansible_container(urls, endpoint, tag):
    """a playbook creates and configures a container (lxd_container), the lxd inventory plugin lists it, a playbook
    runs a command in it over the lxd connection plugin (the `raw` module: busybox has no Python), one deletes it"""
    d = urls.tmpdir("ansible")
    a = Ansible(d, urls[endpoint], *urls.tls(endpoint))
    name = f"ans-{tag}"
    # wait_for_container: community.general 6.6.2 waits for an operation by appending "/wait" to its URL, after the
    # "?project=default" LXD 5.0 puts there: LXD reads the operation without waiting, still Running, and the module
    # fails with an empty message (see test_ansible_lxd_container_without_wait_for_container). With
    # wait_for_container it polls the operation until it ended instead.
    conn = {"url": a.url, "client_cert": f"{d}/lxc-conf/client.crt", "client_key": f"{d}/lxc-conf/client.key",
            "name": name, "timeout": 120, "wait_for_container": True}
    steps = []
    try:
        local = {"hosts": "localhost", "connection": "local", "gather_facts": False}
        rc, tasks = a.playbook("create.yml", [dict(local, tasks=[
            {"name": "create", "community.general.lxd_container": dict(
                conn, source={"type": "image", "alias": "busybox"}, config={"user.client": "ansible"},
                state="started", wait_for_ipv4_addresses=False)},
            {"name": "configure", "community.general.lxd_container": dict(
                conn, config={"user.client": "ansible", "user.step": "configured"}, state="started")},
            {"name": "configure again", "community.general.lxd_container": dict(
                conn, config={"user.client": "ansible", "user.step": "configured"}, state="started")}])])
        steps.append(("create.yml", rc, [(n, r.get("changed"), r.get("actions"), r.get("failed", False),
                                          r.get("msg") if r.get("failed") else None) for n, r in tasks]))
        steps.append(("user.step", member_lxc("node1", "config", "get", name, "user.step").stdout.strip()))
        r = a.run(["ansible-inventory", "-i", os.path.join(d, "inventory.lxd.yml"), "--list"])
        assert r.returncode == 0, r.stderr[-3000:]
        hv = json.loads(r.stdout)["_meta"]["hostvars"].get(name, {})
        steps.append(("inventory", {k: hv.get(k) for k in ("ansible_lxd_state", "ansible_lxd_os", "ansible_connection",
                                                           "ansible_lxd_project", "ansible_lxd_type")}))
        rc, tasks = a.playbook("command.yml", [{"hosts": name, "gather_facts": False, "vars": {
            "ansible_connection": "community.general.lxd", "ansible_lxd_remote": "ep"}, "tasks": [
            {"name": "command", "raw": "echo hello-from-$(hostname); echo to-stderr >&2; cat /proc/1/comm"},
            {"name": "failing command", "raw": "exit 7", "ignore_errors": True}]}])
        steps.append(("command.yml", rc, [(n, r.get("rc"), r.get("stdout_lines"), r.get("failed", False))
                                           for n, r in tasks]))
        rc, tasks = a.playbook("delete.yml", [dict(local, tasks=[
            {"name": "delete", "community.general.lxd_container": dict(conn, state="absent", force_stop=True)}])])
        steps.append(("delete.yml", rc, [(n, r.get("changed"), r.get("actions")) for n, r in tasks]))
    finally:
        remove("instances", name)  # only if a step failed
    return json.loads(json.dumps(steps).replace(tag, "TAG"))


ansible_container.timeout = 1200  # six commands of at most 180 s each, and member_lxc calls


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_ansible_playbook(outcomes, endpoint, seen):
    got = outcomes.check(ansible_container, endpoint)
    seen("method=POST path=/1.0/containers status=202",  # lxd_container
         'path="/1.0/instances?project=default" status=200',  # the inventory plugin
         "/exec?project=default\" status=202")  # lxc exec, from the connection plugin
    assert got == [
        ["create.yml", 0, [["create", True, ["create", "start"], False, None],
                           ["configure", True, ["apply_instance_configs"], False, None],
                           ["configure again", False, [], False, None]]],
        ["user.step", "configured"],
        ["inventory", {"ansible_lxd_state": "running", "ansible_lxd_os": "busybox", "ansible_connection": "local",
                       "ansible_lxd_project": "default", "ansible_lxd_type": "container"}],
        ["command.yml", 0, [["command", 0, ["hello-from-ans-TAG", "init"], False], ["failing command", 7, [], True]]],
        ["delete.yml", 0, [["delete", True, ["stop", "delete"]]]]], got


def ansible_without_wait(urls, endpoint, tag):
    """lxd_container as its documentation's examples use it (no wait_for_container) fails on LXD 5.0.2 itself"""
    d = urls.tmpdir("ansible-nowait")
    a = Ansible(d, urls[endpoint], *urls.tls(endpoint))
    name = f"answ-{tag}"
    conn = {"url": a.url, "client_cert": f"{d}/lxc-conf/client.crt", "client_key": f"{d}/lxc-conf/client.key",
            "name": name, "timeout": 120}
    try:
        rc, tasks = a.playbook("create.yml", [{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                               "tasks": [{"name": "create", "community.general.lxd_container": dict(
                                                   conn, source={"type": "image", "alias": "busybox"},
                                                   state="started")}]}])
        return [rc, [(n, r.get("failed", False), r.get("msg"), r.get("actions")) for n, r in tasks]]
    finally:
        remove("instances", name)


ansible_without_wait.timeout = 600


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_ansible_lxd_container_without_wait_for_container(outcomes, endpoint):
    """the operation's "Running" read back as its end: a failure with an empty message, on the member as through the
    gateway (a client bug against LXD 5.0, not the gateway's)"""
    got = outcomes.check(ansible_without_wait, endpoint)
    assert got == [2, [("create", True, "", [])]], got



def test_readme_matrix_names_existing_tests():
    """Every cell of README.md's compatibility matrix names a test that exists (file, function, parameter)."""
    top = os.environ["LXDGW_TOP"]
    with open(os.path.join(top, "README.md")) as f:
        readme = f.read()
    section = readme.split("## Client compatibility", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)(?:\[(\w+)\])?`", section)
    assert len(named) >= 20, named
    for path, func, param in named:
        with open(os.path.join(top, "tests/e2e", path)) as f:
            src = f.read()
        assert re.search(rf"^def {func}\(", src, re.M), f"README names {path}::{func}, which does not exist"
        if param in ENDPOINTS:  # this file's scenarios: parametrised over the endpoints
            assert "endpoint" in src.split(f"def {func}(", 1)[1].split(")", 1)[0], f"{path}::{func} has no endpoint"
        elif param:
            assert f'"{param}"' in src, f"README names {path}::{func}[{param}], a parameter the file does not have"
