"""SIGHUP: the configuration is read again without dropping a connection (its own gateway, on 127.0.0.1:8483)."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import member_lxc
from helpers import Gateway, Lxc, curl, sh

ADDR = "127.0.0.1:8483"


def fingerprint_of_server():
    out = sh(["sh", "-c", f"openssl s_client -connect {ADDR} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"])
    return out.stdout.strip().split("=")[1]


def fingerprint(crt):
    return sh(["openssl", "x509", "-in", crt, "-noout", "-fingerprint", "-sha256"]).stdout.strip().split("=")[1]


@pytest.fixture
def reloadable(tmp_path, env):
    state = str(tmp_path / "state")
    os.mkdir(state)
    binary = os.environ["LXDGW_BINARY"]
    sh([binary, "init", "--state-dir", state, "--listen", ADDR, "--member", "https://127.0.0.11:8443",
        "--cluster-certificate", os.environ["LXDGW_CLUSTER_CERT"]])
    member_lxc("node1", "config", "trust", "add", f"{state}/identity.crt")
    gw = Gateway(binary, state, ADDR, name="reload-gateway")
    gw.start()
    gw.wait_trusted(env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
    yield gw
    gw.stop()
    member_lxc("node1", "config", "trust", "remove", fingerprint(f"{state}/identity.crt").replace(":", "").lower()[:12],
               check=False)
    gw.check_sanitizers()


def test_sighup_swaps_the_certificate_and_keeps_established_streams(reloadable, env, tmp_path):
    gw = reloadable
    old_fp = fingerprint_of_server()
    assert old_fp == fingerprint(f"{gw.state}/server.crt")
    conf = tmp_path / "lxc"
    conf.mkdir()
    shutil.copy(env["LXDGW_CLIENT_CERT"], conf / "client.crt")
    shutil.copy(env["LXDGW_CLIENT_KEY"], conf / "client.key")
    Lxc(str(conf)).run("remote", "add", "g", f"https://{ADDR}", "--accept-certificate")
    mon = subprocess.Popen(["lxc", "monitor", "g:", "--type=lifecycle", "--format=json"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=dict(os.environ, LXD_CONF=str(conf)))
    try:
        time.sleep(1.5)
        # a renewed certificate (with a DNS name, as init makes them) and debug logging
        sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-nodes", "-days", "30",
            "-keyout", f"{gw.state}/server2.key", "-out", f"{gw.state}/server2.crt", "-subj", "/CN=lxd-gateway",
            "-addext", "subjectAltName=DNS:lxd-gateway"])
        with open(gw.config) as f:
            text = f.read()
        text = text.replace(f"{gw.state}/server.crt", f"{gw.state}/server2.crt").replace(f"{gw.state}/server.key",
                                                                                           f"{gw.state}/server2.key")
        text = text.replace("level: info", "level: debug")
        with open(gw.config, "w") as f:
            f.write(text)
        mark = len(gw.logtext())
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_log("configuration reloaded", mark, timeout=10)
        assert fingerprint_of_server() == fingerprint(f"{gw.state}/server2.crt") != old_fp
        # a backend call, which debug logs (GET /1.0 itself may come from the gateway's cache; this query is never kept)
        code, _ = curl(f"https://{ADDR}/1.0?recursion=1", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])
        assert code == 200
        # the stream opened before the reload still carries the cluster's events
        member_lxc("node1", "storage", "volume", "create", "pool1", "v-reload", "--target", "node1")
        member_lxc("node1", "storage", "volume", "delete", "pool1", "v-reload", "--target", "node1")
        time.sleep(1)
        assert mon.poll() is None, mon.stderr.read()
    finally:
        mon.terminate()
        out, _ = mon.communicate(timeout=10)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any("v-reload" in e["metadata"].get("source", "") for e in events), out[-2000:]
    assert "level=debug" in gw.logtext()[mark:]


def test_sighup_refuses_a_broken_configuration_and_names_restart_keys(reloadable):
    gw = reloadable
    fp = fingerprint_of_server()
    with open(gw.config) as f:
        good = f.read()
    with open(gw.config, "a") as f:
        f.write("bogus: 1\n")
    mark = len(gw.logtext())
    gw.proc.send_signal(signal.SIGHUP)
    log = gw.wait_log("reload refused", mark, timeout=10)
    assert "bogus" in log and "line" in log, log
    assert gw.proc.poll() is None and fingerprint_of_server() == fp
    with open(gw.config, "w") as f:
        f.write(good.replace('listen: ["127.0.0.1:8483"]', 'listen: ["127.0.0.1:8484"]'))
    mark = len(gw.logtext())
    gw.proc.send_signal(signal.SIGHUP)
    log = gw.wait_log("changed keys take effect at the next start", mark, timeout=10)
    assert "keys=listen" in log, log
    assert fingerprint_of_server() == fp  # still serving where it was


def test_access_lines_are_buffered_but_written_within_a_second_and_follow_a_reopen(reloadable, env, tmp_path):
    """Access lines are buffered (one write per many requests), yet each is in the log within a second while the
    gateway idles; on SIGHUP the lines logged so far go where they were meant to go, later ones to the new file; at
    SIGTERM the rest is written."""
    gw = reloadable
    crt, key = env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"]

    def wait_for(read, text, timeout=2.0):
        deadline = time.time() + timeout
        while text not in read() and time.time() < deadline:
            time.sleep(0.05)
        return text in read()

    for i in range(5):
        assert curl(f"{gw.url}/1.0?before-reopen-{i}", crt, key)[0] == 200
    assert wait_for(gw.logtext, "path=/1.0?before-reopen-4 "), "an access line waited more than 2 s in the buffer"
    access = str(tmp_path / "access.log")
    with open(gw.config) as f:
        conf = f.read()
    assert "log: {level: info}" in conf, conf
    with open(gw.config, "w") as f:
        f.write(conf.replace("log: {level: info}", f"log: {{level: info, access: {access}}}"))
    mark = len(gw.logtext())
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_log("configuration reloaded", mark, timeout=10)

    def file_text():
        return open(access).read() if os.path.exists(access) else ""

    assert curl(f"{gw.url}/1.0?after-reopen", crt, key)[0] == 200
    assert wait_for(file_text, "path=/1.0?after-reopen "), "no access line in the new file within 2 s"
    assert "after-reopen" not in gw.logtext() and "before-reopen" not in file_text()
    assert curl(f"{gw.url}/1.0?at-exit", crt, key)[0] == 200
    gw.stop()
    assert "path=/1.0?at-exit " in file_text(), "the last access line was lost at SIGTERM"
