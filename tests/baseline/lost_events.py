#!/usr/bin/python3
"""Baseline for issue 12 item 2: does LXD 5.0.2 ITSELF lose operation completions, with the clients pointed straight
at a member (no gateway), under the parallel load of test_replicas.py::test_parallel_copies_and_moves_through_haproxy
and CPU load on every core?

Each round: 1 MiB volumes are made on node1; then, all at once, `lxc`/`incus storage volume copy|move
m:pool1/V m:pool1/V[-copy] --target node1 --destination-target node2|node3` (the clients' 3-call path: migration
source on node1, pull on the destination, wait for the destination's operation on /1.0/events) run against one member
over HTTPS (--member; `all`: node1, node2, node3 in turn), each bounded (--timeout, 120 s), while `stress-ng --cpu N`
(N = the number of cores) runs. A call that times out is a lost completion: it is killed and recorded with its command
line, the operations its --debug log named, whether each member's own event stream (`lxc monitor --type=operation` on
every member's unix socket, started before the round) carried that operation's end and when, and whether the volume
arrived where it should. With --lxd-debug-log, each member's debug log is kept too, which tells when each client's
/1.0/events request came in and when LXD registered its listener (LXD 5.0.2 answers the upgrade first): printed per
round, and for a timed-out call, for its own listeners. Event-hub links between members that dropped or came back
during a round are printed from the members' logs. Nothing here goes through the gateway; nothing leaves the
cluster's network namespace.

Run inside the cluster's namespace (a cluster of its own: the round makes and deletes volumes named bl*):

    export LXDGW_NETNS=lxdgwB LXDGW_CLUSTER_DIR=/var/tmp/lxdgw-clusterB
    bash tests/cluster/cluster.sh up
    bash tests/cluster/cluster.sh exec /usr/bin/python3 tests/baseline/lost_events.py --rounds 5 --report /tmp/b.json
    # the heavier shape: 49 calls a round, clients on every member, with the members' debug logs
    bash tests/cluster/cluster.sh exec /usr/bin/python3 tests/baseline/lost_events.py --rounds 5 --member all \
        --lxc-copies 14 --lxc-moves 10 --incus-copies 15 --incus-moves 10 --lxd-debug-log
    bash tests/cluster/cluster.sh down

incus 6.0.4 cannot read LXD 5.0's `core.trust_password: true` in GET /1.0 (the gateway rewrites it; here there is
none), so while incus calls are in the mix the script unsets core.trust_password and sets it back at the end
(--incus-copies 0 --incus-moves 0 leaves the configuration alone). Exit status: 0 when no call timed out, 1 otherwise.
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

CLUSTER_DIR = os.environ.get("LXDGW_CLUSTER_DIR", "/var/tmp/lxdgw-cluster")
NODES = ("node1", "node2", "node3")
ADDR = {"node1": "127.0.0.11:8443", "node2": "127.0.0.12:8443", "node3": "127.0.0.13:8443"}
MiB = 1 << 20


def admin(node, *args, check=True, timeout=60):
    """`lxc` as a member's local admin (unix socket)."""
    env = dict(os.environ, LXD_DIR=f"{CLUSTER_DIR}/{node}", LXD_CONF=f"{CLUSTER_DIR}/lxc-conf")
    r = subprocess.run(["lxc", *args], capture_output=True, text=True, input="", timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"lxc {' '.join(args)} on {node} -> {r.returncode}: {r.stderr.strip()}")
    return r


def volumes_on(node):
    out = admin(node, "query", f"/1.0/storage-pools/pool1/volumes/custom?recursion=1&target={node}").stdout
    return {v["name"] for v in json.loads(out) if v["location"] == node}


def fill(node, vol, size):
    d = f"{CLUSTER_DIR}/{node}/storage-pools/pool1/custom/default_{vol}"
    with open(os.path.join(d, "data.bin"), "wb") as f:
        f.write(os.urandom(size))


class Monitor:
    """`lxc monitor --type=operation --format=json` on a member's unix socket: every operation event it printed."""

    def __init__(self, node, logdir):
        env = dict(os.environ, LXD_DIR=f"{CLUSTER_DIR}/{node}", LXD_CONF=f"{CLUSTER_DIR}/lxc-conf")
        self.node = node
        self.err = open(os.path.join(logdir, f"monitor-{node}.err"), "wb")
        self.raw = open(os.path.join(logdir, f"monitor-{node}.jsonl"), "w")  # each event with the time it arrived
        self.proc = subprocess.Popen(["lxc", "monitor", "--type=operation", "--format=json"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, env=env)
        self.events = []
        self.ended = {}  # operation id -> when its end (Success, Failure, Cancelled) arrived here
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        buf = ""
        for line in self.proc.stdout:
            buf += line
            try:
                ev = json.loads(buf)
            except ValueError:
                continue
            buf = ""
            self.raw.write(json.dumps({"received": time.time(), "event": ev}) + "\n")
            with self.lock:
                self.events.append(ev)
                md = ev.get("metadata", {})
                if md.get("status") in ("Success", "Failure", "Cancelled") and "id" in md:
                    self.ended.setdefault(md["id"], time.time())

    def statuses(self, op_id):
        with self.lock:
            return [e["metadata"]["status"] for e in self.events if e.get("metadata", {}).get("id") == op_id]

    def ops(self):
        with self.lock:
            return {e["metadata"]["id"]: e["metadata"] for e in self.events if "id" in e.get("metadata", {})}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.thread.join(5)
        self.err.close()
        self.raw.close()


def debug_log(node, logdir):
    """The member's own debug log while the round runs (`lxc monitor --type=logging --loglevel=debug`; the daemons
    run with --verbose only), each line prefixed with the time it arrived (epoch): when each /1.0/events request came
    in ("Handling API request") and when its listener was registered ("Event listener server handler started")."""
    env = dict(os.environ, LXD_DIR=f"{CLUSTER_DIR}/{node}", LXD_CONF=f"{CLUSTER_DIR}/lxc-conf")
    out = open(os.path.join(logdir, f"lxd-debug-{node}.log"), "wb")
    return subprocess.Popen(["sh", "-c", 'lxc monitor --type=logging --pretty --loglevel=debug | '
                             'while IFS= read -r l; do printf "%s %s\\n" "$(date +%s.%N)" "$l"; done'],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


EV_REQ_RE = re.compile(r'Handling API request" ip="([^"]+)" method=GET protocol=tls url="/1.0/events')
EV_LISTENER_RE = re.compile(r'Event listener server handler (started|stopped)" \S+ local="[^"]+" remote="([^"]+)"')


def listeners(logdir, node):
    """The HTTPS /1.0/events listeners of a member during the round, from its debug log: [{remote, requested,
    registered, stopped}] (epoch seconds; None when not seen)."""
    out, open_ = [], {}
    try:
        f = open(os.path.join(logdir, f"lxd-debug-{node}.log"), errors="replace")
    except OSError:
        return out
    with f:
        for line in f:
            try:
                t = float(line.split(" ", 1)[0])
            except ValueError:
                continue
            m = EV_REQ_RE.search(line)
            if m:
                open_[m.group(1)] = {"remote": m.group(1), "requested": t, "registered": None, "stopped": None}
                out.append(open_[m.group(1)])
                continue
            m = EV_LISTENER_RE.search(line)
            if m and m.group(2) in open_:
                open_[m.group(2)]["registered" if m.group(1) == "started" else "stopped"] = t
    return out


def hms(t):
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}" if t else None


OP_RE = re.compile(r'msg="Got operation from (?:LXD|Incus)"\ntime=\S+ level=debug msg="(.*?)"\n', re.S)


def operations_in(debug_log):
    """The operations a client's --debug log says it got: [(id, description, location)]."""
    ops = []
    for m in OP_RE.finditer(debug_log):
        try:
            op = json.loads(m.group(1).encode().decode("unicode_escape"))
        except ValueError:
            continue
        ops.append((op.get("id"), op.get("description"), op.get("location")))
    return ops


class Job:
    def __init__(self, tool, kind, vol, member, dest, logdir, timeout, debug):
        self.tool, self.kind, self.vol, self.dest, self.member = tool, kind, vol, dest, member
        r = "m" + member[-1]
        target = vol + "-copy" if kind == "copy" else vol
        self.argv = [tool] + (["--debug"] if debug else []) + \
            ["storage", "volume", kind, f"{r}:pool1/{vol}", f"{r}:pool1/{target}", "--target", "node1",
             "--destination-target", dest]
        self.target = target
        self.log = os.path.join(logdir, f"{tool}-{kind}-{vol}.log")
        self.timeout = timeout
        self.rc = None
        self.timed_out = False
        self.killed_at = None
        self.duration = None

    def cmdline(self):
        return " ".join(a for a in self.argv if a != "--debug")

    def run(self, env):
        t = time.time()
        with open(self.log, "wb") as out:
            # an empty pipe for stdin, as the e2e helpers do (incus reads YAML from a stdin that is not a terminal)
            p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env)
            p.stdin.close()
            try:
                self.rc = p.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.timed_out = True
                self.killed_at = time.time()
                p.kill()
                self.rc = p.wait()
        self.duration = time.time() - t

    def text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")


def setup_clients(work, use_incus):
    envs = {}
    lconf = os.path.join(work, "lxc-conf")
    os.makedirs(lconf, exist_ok=True)
    shutil.copy(os.environ["LXDGW_CLIENT_CERT"], os.path.join(lconf, "client.crt"))
    shutil.copy(os.environ["LXDGW_CLIENT_KEY"], os.path.join(lconf, "client.key"))
    envs["lxc"] = dict(os.environ, LXD_CONF=lconf)
    for n in NODES:  # remote mN = member nodeN
        subprocess.run(["lxc", "remote", "remove", "m" + n[-1]], capture_output=True, env=envs["lxc"])
        subprocess.run(["lxc", "remote", "add", "m" + n[-1], f"https://{ADDR[n]}", "--accept-certificate"], check=True,
                       capture_output=True, input="", text=True, env=envs["lxc"], timeout=60)
    if use_incus:
        iconf = os.path.join(work, "incus-conf")
        os.makedirs(iconf, exist_ok=True)
        envs["incus"] = dict(os.environ, INCUS_CONF=iconf)
        if not os.path.exists(os.path.join(iconf, "client.crt")):
            subprocess.run(["incus", "remote", "generate-certificate"], check=True, capture_output=True, input="",
                           text=True, env=envs["incus"], timeout=60)
            admin("node1", "config", "trust", "add", os.path.join(iconf, "client.crt"), "--name",
                  "lxdgw-baseline-incus")
        for n in NODES:
            subprocess.run(["incus", "remote", "remove", "m" + n[-1]], capture_output=True, input="", text=True,
                           env=envs["incus"])
            r = subprocess.run(["incus", "remote", "add", "m" + n[-1], f"https://{ADDR[n]}", "--accept-certificate"],
                               capture_output=True, input="", text=True, env=envs["incus"], timeout=60)
            if r.returncode != 0:
                raise RuntimeError("incus remote add: " + r.stderr)
    return envs


LOGTIME_RE = re.compile(r'^time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z"')


def hub_changes(since):
    """Lines of the members' logs, from `since` (UTC struct_time) on, where a member's event hub dropped or (re)made its
    link to another member (`Added/Removed ... member event listener client`): events from that other member do not
    reach the first member's listeners while the link is down."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", since)
    out = []
    for n in NODES:
        try:
            with open(f"{CLUSTER_DIR}/{n}/lxd.log", errors="replace") as f:
                for line in f:
                    m = LOGTIME_RE.match(line)
                    if m and m.group(1) >= start and "member event listener" in line:
                        out.append(f"{n}: {line.strip()}")
        except OSError:
            pass
    return out


def cleanup_volumes(prefix):
    for node in NODES:
        for name in volumes_on(node):
            if name.startswith(prefix):
                admin(node, "storage", "volume", "delete", "pool1", name, "--target", node, check=False)


def one_round(rnd, args, envs, work):
    prefix = f"bl{rnd}-"
    logdir = os.path.join(work, f"round{rnd}")
    os.makedirs(logdir, exist_ok=True)
    cleanup_volumes(prefix)  # a previous run's leftovers
    mix = [("lxc", "copy", "lc", args.lxc_copies), ("lxc", "move", "lm", args.lxc_moves),
           ("incus", "copy", "ic", args.incus_copies), ("incus", "move", "im", args.incus_moves)]
    jobs = []
    for tool, kind, tag, count in mix:
        for i in range(count):
            vol = f"{prefix}{tag}{i}"
            admin("node1", "storage", "volume", "create", "pool1", vol, "--target", "node1")
            fill("node1", vol, args.size_mib * MiB)
            dest = "node2" if kind == "copy" else "node3"
            member = NODES[len(jobs) % len(NODES)] if args.member == "all" else args.member
            jobs.append(Job(tool, kind, vol, member, dest, logdir, args.timeout, not args.no_debug))
    monitors = [Monitor(n, logdir) for n in NODES]
    debug_logs = [debug_log(n, logdir) for n in NODES] if args.lxd_debug_log else []
    time.sleep(2)  # their streams are registered (LXD answers the upgrade before it registers the listener)
    stress = None
    if args.stress:
        stress = subprocess.Popen(["stress-ng", "--cpu", str(args.stress), "--timeout", str(int(args.timeout) + 120),
                                   "--quiet"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        time.sleep(1)
    started = time.time()
    hub_from = time.gmtime(started - 10)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            for f in [pool.submit(j.run, envs[j.tool]) for j in jobs]:
                f.result()
    finally:
        if stress is not None:
            try:
                os.killpg(stress.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            stress.wait(30)
    wall = time.time() - started
    time.sleep(3)  # late events reach the monitors
    for m in monitors:
        m.stop()
    for p in debug_logs:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
    on = {n: volumes_on(n) for n in NODES}
    hub = hub_changes(hub_from)
    evl = {n: listeners(logdir, n) for n in NODES} if args.lxd_debug_log else {}
    delays = sorted(x["registered"] - x["requested"] for n in evl for x in evl[n] if x["registered"])

    # every operation of the round, as the member streams saw it
    seen = {}
    for m in monitors:
        for op_id, md in m.ops().items():
            seen.setdefault(op_id, md)
    records = []
    for j in jobs:
        log = j.text()
        ops = operations_in(log)
        rec = {"round": rnd, "tool": j.tool, "kind": j.kind, "volume": j.vol, "cmd": j.cmdline(), "member": j.member,
               "rc": j.rc,
               "timed_out": j.timed_out, "seconds": round(j.duration, 1), "operations": []}
        for op_id, desc, loc in ops:
            st = {m.node: m.statuses(op_id) for m in monitors}
            cur = None
            if loc in NODES:
                r = admin(loc, "query", f"/1.0/operations/{op_id}?target={loc}", check=False)
                cur = json.loads(r.stdout).get("status") if r.returncode == 0 else "gone (ended > 5 s ago)"
            ends = [m.ended[op_id] for m in monitors if op_id in m.ended]
            rec["operations"].append({"id": op_id, "description": desc, "location": loc,
                                      "events": {n: (s[-1] if s else None) for n, s in st.items()},
                                      "now": cur, "ended": hms(min(ends)) if ends else None})
        if j.timed_out and evl:
            # the client's own event listeners: those of its member that ended when it was killed
            rec["listeners"] = [{k: (hms(v) if k != "remote" else v) for k, v in x.items()} for x in evl[j.member]
                                if x["stopped"] and j.killed_at - 0.5 <= x["stopped"] <= j.killed_at + 5]
        rec["dest_has_volume"] = j.target in on[j.dest]
        rec["source_has_volume"] = j.vol in on["node1"]
        if j.timed_out or j.rc != 0:
            # the client's last steps (request lines, not the JSON bodies it logged)
            steps = [ln for ln in log.splitlines() if 'msg="\\n' not in ln]
            rec["log_tail"] = "\n".join(ln[:300] for ln in steps[-8:])
        records.append(rec)
    # operations whose end never showed on some member's stream (whoever waited on them)
    unended = {op_id: {m.node: (m.statuses(op_id) or [None])[-1] for m in monitors}
               for op_id in seen
               if any(not set(m.statuses(op_id)) & {"Success", "Failure", "Cancelled"} for m in monitors)}
    cleanup_volumes(prefix)
    reg = {}
    if delays:
        reg = {"listeners": len(delays), "median": round(delays[len(delays) // 2], 2),
               "p90": round(delays[int(0.9 * (len(delays) - 1))], 2), "max": round(delays[-1], 2)}
    return records, wall, unended, hub, reg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--member", default="node1", choices=NODES + ("all",),
                    help="the member every client talks to (all: the calls take node1, node2, node3 in turn)")
    ap.add_argument("--lxc-copies", type=int, default=8)
    ap.add_argument("--lxc-moves", type=int, default=6)
    ap.add_argument("--incus-copies", type=int, default=6)
    ap.add_argument("--incus-moves", type=int, default=4)
    ap.add_argument("--size-mib", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120, help="seconds one client call may take (then: lost)")
    ap.add_argument("--stress", type=int, default=os.cpu_count(), help="stress-ng --cpu N during the load (0: none)")
    ap.add_argument("--no-debug", action="store_true", help="run the clients without --debug (no operation ids)")
    ap.add_argument("--lxd-debug-log", action="store_true",
                    help="keep each member's debug log of the round (lxd-debug-nodeN.log in the round's directory)")
    ap.add_argument("--work", default=os.path.join(CLUSTER_DIR, "baseline"))
    ap.add_argument("--report", help="write every record as JSON here")
    args = ap.parse_args()
    if args.stress and not shutil.which("stress-ng"):
        sys.exit("stress-ng is missing (apt-get install stress-ng)")
    use_incus = args.incus_copies + args.incus_moves > 0
    os.makedirs(args.work, exist_ok=True)
    password = None
    if use_incus:
        password = os.environ.get("LXDGW_TRUST_PASSWORD")
        admin("node1", "config", "unset", "core.trust_password")
    all_records, rounds, unended_all = [], [], {}
    try:
        envs = setup_clients(args.work, use_incus)
        for rnd in range(1, args.rounds + 1):
            records, wall, unended, hub, reg = one_round(rnd, args, envs, args.work)
            all_records += records
            unended_all.update(unended)
            n_to = sum(r["timed_out"] for r in records)
            n_fail = sum(1 for r in records if not r["timed_out"] and r["rc"] != 0)
            rounds.append({"round": rnd, "commands": len(records), "timed_out": n_to, "failed": n_fail,
                           "wall_seconds": round(wall, 1), "slowest": max(r["seconds"] for r in records),
                           "ops_without_end_on_some_stream": len(unended), "hub_changes": hub,
                           "listener_registration_seconds": reg})
            print(f"round {rnd}: {len(records)} calls in {wall:.1f} s (slowest {rounds[-1]['slowest']} s), "
                  f"{n_to} timed out, {n_fail} failed, {len(unended)} operation(s) without an end on some member "
                  "stream",
                  flush=True)
            for line in hub:
                print("    event hub: " + line, flush=True)
            if reg:
                print(f"    /1.0/events request -> listener registered: median {reg['median']} s, p90 {reg['p90']} s, "
                      f"max {reg['max']} s over {reg['listeners']} client listeners", flush=True)
    finally:
        if password:
            admin("node1", "config", "set", f"core.trust_password={password}", check=False)
    bad = [r for r in all_records if r["timed_out"] or r["rc"] != 0]
    for r in bad:
        print(("TIMED OUT" if r["timed_out"] else f"FAILED rc={r['rc']}") +
              f" after {r['seconds']} s (round {r['round']}, client on {r['member']}): {r['cmd']}")
        for op in r["operations"]:
            print(f"    op {op['id']} {op['description']!r} on {op['location']}: last event per member stream "
                  f"{op['events']} (first end seen {op['ended']}), now {op['now']}")
        for x in r.get("listeners", []):
            print(f"    its /1.0/events on {r['member']} from {x['remote']}: requested {x['requested']}, listener "
                  f"registered {x['registered']}, stopped {x['stopped']}")
        print(f"    volume at destination: {r['dest_has_volume']}, still on node1: {r['source_has_volume']}")
        print("    " + r.get("log_tail", "").replace("\n", "\n    "))
    total = len(all_records)
    n_to = sum(r["timed_out"] for r in all_records)
    where = args.member if args.member != "all" else "node1..3"
    print(f"TOTAL: {len(rounds)} rounds, {total} client calls straight to {where} "
          f"(stress-ng --cpu {args.stress}), {n_to} timed out (> {args.timeout} s), "
          f"{sum(1 for r in all_records if not r['timed_out'] and r['rc'] != 0)} failed otherwise; "
          f"{len(unended_all)} operation(s) without an end on some member's stream")
    if unended_all:
        print("operations without an end on some stream:", json.dumps(unended_all, indent=1))
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"args": vars(args), "rounds": rounds, "records": all_records, "unended": unended_all}, f,
                      indent=1)
    return 1 if n_to else 0


if __name__ == "__main__":
    sys.exit(main())
