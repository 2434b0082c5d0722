"""Fixtures for end-to-end tests: a real LXD 5.0.2 cluster (tests/cluster/cluster.sh, already up) and the gateway
binary under test ($LXDGW_BINARY) started in front of it. Everything runs inside the cluster's private network
namespace; nothing here reaches beyond loopback."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from helpers import Gateway, Lxc, curl, sh

TOP = os.environ["LXDGW_TOP"]
CLUSTER_DIR = os.environ["LXDGW_CLUSTER_DIR"]
GW_ADDR = "127.0.0.1:8443"
METRICS_ADDR = "127.0.0.1:9443"


@pytest.fixture(scope="session")
def env():
    return dict(os.environ)


def member_lxc(node, *args, check=True):
    """`lxc` as the local admin of a member (unix socket), for set-up and for checking results behind the gateway."""
    return sh(["env", f"LXD_DIR={CLUSTER_DIR}/{node}", "LXD_CONF=" + CLUSTER_DIR + "/lxc-conf", "lxc", *args], check=check)


def gateway_instance(state, addr, metrics_addr, cluster_conf=""):
    """A gateway with its own state dir `state` and identity, trusted by the cluster, listening on `addr` (and serving
    /metrics on `metrics_addr`); `cluster_conf`: more keys of `cluster:` ("  key: value\n" lines). A generator: yields
    the running gateway, then stops it, takes its identity and shadows out of the trust store and checks its sanitizer
    reports."""
    binary = os.environ["LXDGW_BINARY"]
    sh([binary, "init", "--state-dir", state, "--listen", addr, "--member", "https://127.0.0.11:8443",
        "--cluster-certificate", os.environ["LXDGW_CLUSTER_CERT"]])
    fp = sh(["openssl", "x509", "-in", f"{state}/identity.crt", "-noout", "-fingerprint", "-sha256"]).stdout
    member_lxc("node1", "config", "trust", "add", f"{state}/identity.crt")
    path = f"{state}/lxd-gateway.yaml"
    with open(path) as f:
        conf = f.read()
    with open(path, "w") as f:
        f.write(conf.replace("cluster:\n", "cluster:\n" + cluster_conf, 1) + f"metrics:\n  listen: {metrics_addr}\n")
    gw = Gateway(binary, state, addr)
    gw.start()
    yield gw
    gw.stop()
    fp = fp.split("=")[1].strip().replace(":", "").lower()
    member_lxc("node1", "config", "trust", "remove", fp[:12], check=False)
    shadows = os.path.join(state, "shadows")  # shadow identities this gateway made: not left in the cluster
    for f in os.listdir(shadows) if os.path.isdir(shadows) else []:
        if f.endswith(".crt"):
            sfp = sh(["openssl", "x509", "-in", os.path.join(shadows, f), "-noout", "-fingerprint", "-sha256"]).stdout
            member_lxc("node1", "config", "trust", "remove", sfp.split("=")[1].strip().replace(":", "").lower()[:12], check=False)
    gw.check_sanitizers()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    """The gateway under test, with its own state dir and identity, trusted by the cluster."""
    yield from gateway_instance(str(tmp_path_factory.mktemp("gw-state")), GW_ADDR, METRICS_ADDR)


@pytest.fixture(scope="session")
def lxc(gateway, tmp_path_factory):
    """A fresh `lxc` 5.0.2 client config whose certificate the cluster trusts, with remote `gw` = the gateway."""
    conf = str(tmp_path_factory.mktemp("lxc-conf"))
    shutil.copy(os.environ["LXDGW_CLIENT_CERT"], f"{conf}/client.crt")
    shutil.copy(os.environ["LXDGW_CLIENT_KEY"], f"{conf}/client.key")
    client = Lxc(conf)
    client.run("remote", "add", "gw", f"https://{GW_ADDR}", "--accept-certificate")
    return client


@pytest.fixture(scope="session")
def incus(gateway, tmp_path_factory):
    """incus 6.0.4 with its own config and a certificate the cluster trusts, remote `gw` = the gateway."""
    conf = str(tmp_path_factory.mktemp("incus-conf"))
    env = dict(os.environ, INCUS_CONF=conf)

    def run(*args, check=True):
        return sh(["incus", *args], check=check, env=env)

    run("remote", "generate-certificate")
    member_lxc("node1", "config", "trust", "add", os.path.join(conf, "client.crt"), "--name", "incus-e2e")
    fp = sh(["openssl", "x509", "-in", os.path.join(conf, "client.crt"), "-noout", "-fingerprint", "-sha256"]).stdout
    fp = fp.split("=")[1].strip().replace(":", "").lower()
    gateway.wait_trusted(os.path.join(conf, "client.crt"), os.path.join(conf, "client.key"))
    run("remote", "add", "gw", "https://127.0.0.1:8443", "--accept-certificate")
    run.conf = conf  # for clients started by hand (incus monitor)
    yield run
    member_lxc("node1", "config", "trust", "remove", fp[:12], check=False)
