"""Per-process CPU time and memory from /proc."""

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid):
    """(utime, stime) of a process (all its threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); utime/stime are fields 14/15
    return int(rest[11]) / CLK_TCK, int(rest[12]) / CLK_TCK


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    return sum(cpu_times(pid))


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def parent_pid(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def comm(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().strip()


def descendants(root):
    """All live descendants of ``root`` (pid list)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(parent_pid(int(entry)), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Meter:
    """CPU seconds consumed by a set of processes between start() and stop()."""

    def __init__(self, pids):
        self.pids = list(pids)

    def _totals(self):
        times = [cpu_times(p) for p in self.pids]
        return sum(u for u, _ in times), sum(s for _, s in times)

    def start(self):
        self.t0 = self._totals()

    def stop(self):
        """CPU seconds since start(); the kernel's share of them is then in
        ``system_seconds``: on a VM the syscalls often cost more than the
        bus's own code, and the split tells which one a change moved."""
        user, system = self._totals()
        self.system_seconds = system - self.t0[1]
        return (user - self.t0[0]) + self.system_seconds

    def rss(self):
        return sum(rss_bytes(p) for p in self.pids)
