"""pytest plugin (tests/e2e/run.sh loads it with -p exclusive): the test modules named in EXCLUSIVE run alone on the
machine, one suite at a time, while every other module of the suites runs concurrently.

Why: `make test` runs the normal and the sanitizer suites at the same time, each on its own cluster, on a 2-core machine.
test_replicas.py sends ~50 copies and moves at once through two replicas; when both suites reached it together, LXD's
own migration timeouts expired ("read tcp ...: i/o timeout", "context deadline exceeded", "websocket: bad handshake",
"Missing event connection with target cluster member"): it failed in 3 of 3 such runs and passed in 2 of 2 runs of one
suite alone, on the same loaded machine. LXD's migration source gives up 10 s after it was made (tests/baseline/ shows
that without any gateway), so the cause is two such bursts sharing 2 cores, not what the test checks. The lock is a file
in /run/lock, taken with flock: the kernel releases it when the holding pytest ends, however it ends."""
import fcntl
import os
import time

import pytest

EXCLUSIVE = {"test_replicas", "test_adoption"}  # test_adoption: timed adoptions (lease + 15 s)
LOCK = "/run/lock/lxdgw-e2e.exclusive.lock"
WAIT = 900  # s: longer than any exclusive module takes on a loaded machine (test_replicas: ~80 s); a hang is a bug


@pytest.fixture(scope="module", autouse=True)
def exclusive_module(request):
    if request.module.__name__.rpartition(".")[2] not in EXCLUSIVE:
        yield
        return
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.time() + WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise AssertionError(f"{request.module.__name__}: {LOCK} still held by another suite after {WAIT} s")
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)
