"""GET /1.0/operations/<id>/wait?timeout=N on the gateway's own operation, when N passes before the operation ends: LXD
answers the operation as it is then (Running), and the gateway must go on. The wait's expiry used to end it from inside
h2o's walk over the wait's own timeout, which then went on from a freed node: the gateway segfaulted in
h2o_timeout_run (both replicas at once, in a parallel run whose moves outlasted their waits)."""
import concurrent.futures
import time

from helpers import curl
from test_move import crashable, start_slow_source_move, vol, wait_op, where  # noqa: F401 (fixtures)


def test_wait_timeout_passing_while_the_move_runs(crashable, env, vol):  # noqa: F811
    """A move held 6 s at its source dial; three waits of 1 s on it, at once: each answers Running; the gateway lives,
    and the move then ends Success."""
    try:
        op_id = start_slow_source_move(crashable, env)["metadata"]["id"]
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            waits = [pool.submit(curl, f"{crashable.url}/1.0/operations/{op_id}/wait?timeout=1", env["LXDGW_CLIENT_CERT"],
                                 env["LXDGW_CLIENT_KEY"], timeout=20) for _ in range(3)]
            answers = [w.result() for w in waits]
        for code, body in answers:
            assert code == 200, body
            assert body["metadata"]["status"] == "Running", body
        time.sleep(0.5)
        assert crashable.proc.poll() is None, f"gateway died ({crashable.proc.returncode}): {crashable.logtext()[-2000:]}"
        done = wait_op(crashable.url, env, op_id, timeout=120)
        assert done["status"] == "Success", done
        assert where("v-mv") == ["node2"]
    finally:
        crashable.stop()
