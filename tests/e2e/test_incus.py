"""incus 6.0.4 (today's main client of the single call) against LXD 5.0.2, through the gateway."""


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
