"""incus 6.0.4 (today's main client of the single call) against LXD 5.0.2, through the gateway."""
import os

import pytest

from conftest import member_lxc
from helpers import sh


@pytest.fixture(scope="module")
def incus(gateway, tmp_path_factory):
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
    yield run
    member_lxc("node1", "config", "trust", "remove", fp[:12], check=False)


def test_incus_fails_directly_on_lxd_5_0_with_a_trust_password(incus):
    """The live reason for the string presentation (the harness sets core.trust_password)."""
    r = incus("remote", "add", "direct", "https://127.0.0.11:8443", "--accept-certificate", check=False)
    assert r.returncode != 0 and "cannot unmarshal bool" in r.stderr, r.stderr


def test_incus_works_through_the_gateway(incus):
    incus("list", "gw:")
    r = incus("storage", "volume", "list", "gw:pool1", "--format", "csv")
    assert r.returncode == 0
    r = incus("info", "gw:")
    assert "core.trust_password: \"true\"" in r.stdout, r.stdout
