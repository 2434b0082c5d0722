"""Operator tooling: Prometheus metrics on their own plain-HTTP address, moving with the traffic."""
import re

from conftest import METRICS_ADDR
from helpers import curl, sh


def scrape():
    r = sh(["curl", "-s", "--max-time", "10", f"http://{METRICS_ADDR}/metrics"])
    values = {}
    for line in r.stdout.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values, r.stdout


def test_metrics_move_with_the_traffic(gateway, env):
    before, _ = scrape()
    for _ in range(3):
        assert curl(gateway.url + "/1.0", env["LXDGW_CLIENT_CERT"], env["LXDGW_CLIENT_KEY"])[0] == 200
    code, body = curl(gateway.url + "/1.0/storage-pools/pool1/volumes/custom/v-none?target=node9", env["LXDGW_CLIENT_CERT"],
                      env["LXDGW_CLIENT_KEY"], method="POST", data={"name": "x", "source": {"location": "node1"}})
    assert code == 404, body
    after, text = scrape()
    key = 'lxd_gateway_requests_total{route="server",status="200"}'
    assert after[key] - before.get(key, 0) >= 3, text
    refused = 'lxd_gateway_single_calls_total{kind="volume_move",result="refused"}'
    assert after[refused] - before.get(refused, 0) == 1, text
    assert after["lxd_gateway_backend_call_duration_seconds_count"] > before.get("lxd_gateway_backend_call_duration_seconds_count", 0)
    for node in ("node1", "node2", "node3"):
        assert after[f'lxd_gateway_member_up{{member="{node}"}}'] == 1, text
    assert 0 <= after["lxd_gateway_trust_mirror_age_seconds"] < 45, text
    assert re.search(r'^# TYPE lxd_gateway_backend_call_duration_seconds histogram$', text, re.M)


def test_metrics_only_on_their_own_address(gateway, env):
    """The clients' listener never serves the gateway's metrics, whatever Host a client sends."""
    for host in ("lxd-gateway-metrics", "lxd-gateway-metrics:65535"):
        r = sh(["curl", "-sk", "--max-time", "10", "-H", f"Host: {host}", "--cert", env["LXDGW_CLIENT_CERT"], "--key",
                env["LXDGW_CLIENT_KEY"], gateway.url + "/metrics"])
        assert "lxd_gateway_requests_total" not in r.stdout, r.stdout[:500]
