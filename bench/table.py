#!/usr/bin/env python3
"""table.py RESULTS: the bench's one table (markdown, in issue 14's shape) from the raw numbers bench/run.sh wrote.

RESULTS has one "key value" a line. Every row prints the measured values, the ratios gateway/direct and
gateway/HAProxy, the target and PASS or MISS (or "info" for rows with no target). A MISS is a finding, not a failure:
the exit status is 0 unless a number the table needs is missing or an upload through the gateway FAILED (then 1,
naming it).
"""
import sys

R = {}
for line in open(sys.argv[1]):
    k, _, v = line.strip().partition(" ")
    if k:
        R[k] = v
missing = []
failed = []


def num(key):
    if key not in R:
        missing.append(key)
        return None
    return float(R[key])


def fmt(v, unit=""):
    if v is None:
        return "?"
    if isinstance(v, str):
        return v
    if float(v).is_integer() and not unit:
        return f"{v:.0f}"
    return (f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}") + unit


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


rows = []


def row(work, direct, haproxy, gateway, target="", ok=None, unit=""):
    gd, gh = ratio(gateway, direct), ratio(gateway, haproxy)
    verdict = "info" if not target else "NOT MEASURED" if ok is None else "PASS" if ok else "MISS"
    rows.append([work, fmt(direct, unit) if direct is not None else "-", fmt(haproxy, unit) if haproxy is not None else "-",
                 fmt(gateway, unit), f"{gd:.2f}" if gd else "-", f"{gh:.2f}" if gh else "-", target, verdict])


parts = R.get("parts", "").split()


def api(label, path, targets):
    c = R.get("conc", "16")
    d, h, g = (num(f"api.{label}.{t}.c{c}.rps") for t in ("direct", "haproxy", "gateway"))
    row(f"`GET {path}` req/s (c={c})", d, h, g, ">= 0.97x direct", None if None in (d, g) else g >= 0.97 * d)
    if "p99" in targets:
        d, h, g = (num(f"api.{label}.{t}.c{c}.p99") for t in ("direct", "haproxy", "gateway"))
        row("same, p99 latency", d, h, g, "<= 1.1x direct", None if None in (d, g) else g <= 1.1 * d, " ms")
    h, g = num(f"api.{label}.haproxy.c{c}.cpu"), num(f"api.{label}.gateway.c{c}.cpu")
    row("same, proxy CPU s per 10k requests", None, h, g, "< HAProxy", None if None in (h, g) else g < h)
    for n in R.get("scale", "").split() if "scale" in targets else []:
        if n == c:
            continue
        d, h, g = (num(f"api.{label}.{t}.c{n}.rps") for t in ("direct", "haproxy", "gateway"))
        row(f"same, req/s at c={n}", d, h, g)


if "api" in parts:
    api("root", "/1.0", ["p99", "scale"])
    api("instances", "/1.0/instances?recursion=1", ["scale"])
    api("pools", "/1.0/storage-pools?recursion=1", [])

runs = R.get("lxc_runs", "?")
for cmd, words in (("list", "lxc list"), ("vollist", "lxc storage volume list pool1")) if "lxc" in parts else ():
    d, h, g = (num(f"lxc.{cmd}.{t}.seconds") for t in ("direct", "haproxy", "gateway"))
    row(f"`{words}`, {runs} fresh processes, total", d, h, g, "<= 1.1x direct", None if None in (d, g) else g <= 1.1 * d, " s")
if "lxc" in parts:
    row("both, proxy CPU s (all those processes)", None, num("lxc.haproxy.cpu"), num("lxc.gateway.cpu"), unit=" s")

for key, words, mib in (("push", "`lxc file push`", "push_mib"), ("image", "`lxc image import`", "image_mib")):
    if key not in parts:
        continue
    d, g = num(f"{key}.direct.seconds"), num(f"{key}.gateway.seconds")
    size = f"{R.get(mib, '?')} MiB"
    row(f"{size} {words}", d, None, g, "<= 1.15x direct", None if None in (d, g) else g <= 1.15 * d, " s")
    if f"{key}.gateway.failed" in R:  # the upload through the gateway broke off: its numbers are up to that moment
        rows[-1][3] = f"FAILED after {fmt(g, ' s')}"
        rows[-1][4] = "-"
        rows[-1][7] = "FAILED"
        failed.append(key)
    a, held = num(f"{key}.gateway.anon_peak"), num(f"{key}.gateway.held_peak")
    a, held = (None if x is None else x / 1024 for x in (a, held))
    row("same, gateway peak RssAnon", None, None, a, "< 64 MiB", None if a is None else a < 64, " MiB")
    row("same, most body bytes held (spill files + anon growth)", None, None, held, "<= 64 MiB",
        None if held is None else held <= 64, " MiB")
    f = num(f"{key}.gateway.file_peak")
    row("same, gateway peak RssFile (spill files' page cache)", None, None, None if f is None else f / 1024, unit=" MiB")
    row("same, gateway CPU s", None, None, num(f"{key}.gateway.cpu_s"), unit=" s")

for key, words in (("copy", "volume copy (best of 2; gateway 1 call, direct lxc 3 calls)"),
                   ("move", "volume move (best of 2)")) if "copy" in parts else ():
    d, g = num(f"{key}.direct.seconds"), num(f"{key}.gateway.seconds")
    row(f"{R.get('copy_mib', '?')} MiB {words}", d, None, g, "<= 1.05x direct", None if None in (d, g) else g <= 1.05 * d, " s")
    row("same, gateway CPU s per call", None, None, num(f"{key}.gateway.cpu"), unit=" s")

if "idle" in parts:
    n = R.get("idle_n", "?")
    b, w = num("idle.gateway.rss_before"), num("idle.gateway.rss_with")
    delta = None if None in (b, w) else (w - b) / 1024
    row(f"{n} idle `/1.0/events` streams: gateway RSS growth", None, None, delta, "< 100 MiB",
        None if delta is None else delta < 100, " MiB")
    if b is not None and w is not None:
        rows[-1][0] += f" ({b / 1024:.1f} -> {w / 1024:.1f} MiB)"
    a = num("idle.gateway.rss_after")
    row("same, gateway RSS 2 s after they closed", None, None, None if a is None else a / 1024, unit=" MiB")
    fb, fw, fa = (num(f"idle.gateway.fds_{w}") for w in ("before", "with", "after"))
    row(f"same, gateway open fds before / with / after: {fmt(fb)} / {fmt(fw)} / {fmt(fa)}", None, None, fw)

head = ["work", "direct", "HAProxy", "gateway", "gateway/direct", "gateway/HAProxy", "target", ""]
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for r in rows:
    print("| " + " | ".join(r) + " |")
if missing:
    print(f"table.py: no measurement for: {', '.join(missing)}", file=sys.stderr)
    sys.exit(1)
if failed:
    print(f"table.py: through the gateway, these broke off (their memory rows count up to that moment): "
          f"{', '.join(failed)}", file=sys.stderr)
    sys.exit(1)
