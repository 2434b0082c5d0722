#!/usr/bin/env python3
"""sample.py PID STOPFILE MAXSECONDS DIR...: the memory a process holds while it relays a large body.

Every ~50 ms until STOPFILE exists (or MAXSECONDS pass), reads /proc/PID/status (RssAnon, RssFile) and the sizes of
the process's spill files: every open fd, and every mapped file, whose target is unlinked ("(deleted)") or lies under
one of the DIRs (the gateway's state dir, /tmp), but its logs and journal (*.log, *.journal). Unlinked files are invisible to `du`; stat through /proc/PID/fd and
/proc/PID/map_files sees them. Each file counts once (by device and inode), at the bytes it has on disk (st_blocks:
a spill file may be sparse, sized to a buffer's capacity ahead of the data) and at its apparent size (st_size).

Prints one line of key=value (KiB): anon_base, anon_peak, file_peak (RssFile), spill_peak (sum of the spill files'
bytes on disk), spill_size_peak (sum of their apparent sizes), held_peak (the most of spill + anon above anon_base
at one sample), samples; and cpu_s, the CPU seconds (user + system) the process used from start to stop. Exit 1 if the process was not there or went away.
"""
import os
import sys
import time


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile", "VmRSS"):
                out[k] = int(v.split()[0])
    return out


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spilled(pid, dirs):
    """bytes in the process's unlinked or state-dir files, open or mapped, each inode once"""
    seen = {}

    def consider(link, path):
        if not (link.endswith("(deleted)") or any(link.startswith(d + "/") for d in dirs)):
            return
        if link.startswith(("/memfd:", "/dev/")) or "anon_inode" in link:
            return
        if link.endswith((".log", ".journal")):  # the gateway's own logs and move journal in its state dir
            return
        try:
            st = os.stat(path)
        except OSError:
            return
        seen[(st.st_dev, st.st_ino)] = (st.st_blocks * 512, st.st_size)

    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            consider(os.readlink(f"{fd_dir}/{fd}"), f"{fd_dir}/{fd}")
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].strip():
                    consider(parts[5].strip(), f"/proc/{pid}/map_files/{parts[0]}")
    except OSError:
        pass
    return sum(v[0] for v in seen.values()) // 1024, sum(v[1] for v in seen.values()) // 1024


def main():
    pid, stop, maxs, dirs = sys.argv[1], sys.argv[2], float(sys.argv[3]), [d.rstrip("/") for d in sys.argv[4:]]
    try:
        base, cpu0 = status(pid), cpu(pid)
    except OSError:
        print(f"sample.py: no process {pid}", file=sys.stderr)
        return 1
    anon_peak = file_peak = spill_peak = size_peak = held_peak = n = 0
    end = time.monotonic() + maxs
    while not os.path.exists(stop) and time.monotonic() < end:
        try:
            s = status(pid)
            sp, size = spilled(pid, dirs)
        except OSError:
            print(f"sample.py: process {pid} went away", file=sys.stderr)
            return 1
        n += 1
        anon_peak = max(anon_peak, s["RssAnon"])
        file_peak = max(file_peak, s["RssFile"])
        spill_peak = max(spill_peak, sp)
        size_peak = max(size_peak, size)
        held_peak = max(held_peak, sp + max(0, s["RssAnon"] - base["RssAnon"]))
        time.sleep(0.05)
    try:
        cpu1 = cpu(pid)
    except OSError:
        print(f"sample.py: process {pid} went away", file=sys.stderr)
        return 1
    print(f"cpu_s={cpu1 - cpu0:.2f} anon_base={base['RssAnon']} anon_peak={anon_peak} file_peak={file_peak} spill_peak={spill_peak} "
          f"spill_size_peak={size_peak} held_peak={held_peak} samples={n}")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
