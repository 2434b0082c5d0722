#!/usr/bin/env python3
"""idle_streams.py ADDR CERT KEY N STOPFILE MAXSECONDS: holds N idle /1.0/events websockets open at ADDR.

Opens N streams (HTTP/1.1 upgrade, TLS with the client certificate; 16 at a time, every step bounded by a timeout),
prints "opened=N seconds=S" and flushes, then holds them (reading nothing) until STOPFILE exists or MAXSECONDS pass,
then checks each is still open (a closed stream reads EOF) and prints "alive=M". Exit 1 unless all N opened and
stayed open.
"""
import base64
import os
import resource
import socket
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def open_stream(addr, ctx, deadline):
    host, port = addr.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname=host)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /1.0/events?type=lifecycle HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        s.settimeout(max(0.1, deadline - time.time()))
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError(f"closed before the upgrade: {buf!r}")
        buf += chunk
    if not buf.startswith(b"HTTP/1.1 101"):
        raise RuntimeError("upgrade refused: %r" % buf.split(b"\r\n", 1)[0])
    return s


def main():
    addr, cert, key, n, stop, maxs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 64:
        print(f"idle_streams.py: fd limit {hard} is below {n + 64}", file=sys.stderr)
        return 1
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    t0 = time.time()
    deadline = t0 + maxs
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(open_stream, addr, ctx, min(deadline, time.time() + 60)) for _ in range(n)]
        streams, errors = [], []
        for f in futures:
            try:
                streams.append(f.result(timeout=max(1, deadline - time.time())))
            except Exception as e:  # noqa: BLE001 (reported, then the run fails)
                errors.append(repr(e))
    print(f"opened={len(streams)} seconds={time.time() - t0:.1f}", flush=True)
    if errors:
        print(f"idle_streams.py: {len(errors)} streams failed, first: {errors[0]}", file=sys.stderr)
    while not os.path.exists(stop) and time.time() < deadline:
        time.sleep(0.1)
    alive = 0
    for s in streams:
        s.setblocking(False)
        try:
            alive += s.recv(4096) != b""  # an event arrived: open
        except (BlockingIOError, ssl.SSLWantReadError):
            alive += 1  # nothing to read: open
        except OSError:
            pass
        s.close()
    print(f"alive={alive}", flush=True)
    return 0 if alive == n else 1


if __name__ == "__main__":
    sys.exit(main())
