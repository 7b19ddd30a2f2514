"""CPU and memory limits for local replicas, through cgroups v1 or v2, or a clear 'not enforced'.

v1 (this machine): `cpu` and `memory` hierarchies mounted separately; memory groups must live under the
process's own memory cgroup. v2: one unified hierarchy with `cpu.max` and `memory.max`, usable when we
own a delegated subtree. Anything else: replicas run unlimited and the report says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "nightcap-"
PERIOD_US = 100_000


def own_cgroup_path(controller: str) -> str:
    """This process's cgroup path for a v1 controller (or the v2 path when controller is '')."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller == "" and controllers == "":
                return path
            if controller and controller in controllers.split(","):
                return path
    except OSError:
        pass
    return "/"


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


@dataclass
class CgroupSupport:
    """What this machine lets us enforce, and why not when it doesn't."""

    version: str  # "v1", "v2" or "none"
    cpu_base: Path | None = None
    memory_base: Path | None = None
    note: str = ""

    @property
    def enforced(self) -> bool:
        return self.version != "none"


def detect(root: Path = ROOT) -> CgroupSupport:
    if (root / "cgroup.controllers").exists():
        base = root / own_cgroup_path("").lstrip("/")
        if base == root / "":
            base = root
        candidate = base
        controllers = (candidate / "cgroup.controllers").read_text().split() if (candidate / "cgroup.controllers").exists() else []
        if _writable(candidate) and {"cpu", "memory"} <= set(controllers):
            return CgroupSupport("v2", candidate, candidate)
        return CgroupSupport("none", note="cgroup v2 is present but no writable subtree with cpu and memory controllers is delegated to this user")
    cpu = root / "cpu"
    mem = root / "memory" / own_cgroup_path("memory").lstrip("/")
    if _writable(cpu) and (cpu / "cpu.cfs_quota_us").exists() and _writable(mem):
        return CgroupSupport("v1", cpu, mem)
    if cpu.exists() or (root / "memory").exists():
        return CgroupSupport("none", note="cgroup v1 is mounted but not writable here (run as root to enforce limits)")
    return CgroupSupport("none", note="no cgroup filesystem found; limits cannot be enforced on this machine")


@dataclass
class ReplicaCgroup:
    """One replica's CPU + memory group; `attach()` runs in the child before exec."""

    support: CgroupSupport
    name: str
    dirs: list[Path] = field(default_factory=list)

    def create(self, cpu: float | None, memory: int | None) -> None:
        s = self.support
        if s.version == "v1":
            assert s.cpu_base and s.memory_base
            cpu_dir, mem_dir = s.cpu_base / self.name, s.memory_base / self.name
            cpu_dir.mkdir(exist_ok=True)
            mem_dir.mkdir(exist_ok=True)
            self.dirs = [cpu_dir, mem_dir]
            self.set_cpu(cpu)
            if memory:
                # No swap, so the limit is a real OOM line as in a pod.
                (mem_dir / "memory.limit_in_bytes").write_text(str(memory))
                swap = mem_dir / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    try:
                        swap.write_text(str(memory))
                    except OSError:
                        pass
                (mem_dir / "memory.swappiness").write_text("0") if (mem_dir / "memory.swappiness").exists() else None
        elif s.version == "v2":
            assert s.cpu_base
            group = s.cpu_base / self.name
            group.mkdir(exist_ok=True)
            self.dirs = [group]
            self.set_cpu(cpu)
            (group / "memory.max").write_text(str(memory) if memory else "max")
            if (group / "memory.swap.max").exists():
                (group / "memory.swap.max").write_text("0")

    def set_cpu(self, cpu: float | None) -> None:
        """The CPU limit as a CFS quota per period (None: unlimited); also changes it for a running process."""
        cpu_dir = self.dirs[0]
        if self.support.version == "v1":
            (cpu_dir / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (cpu_dir / "cpu.cfs_quota_us").write_text(str(int(cpu * PERIOD_US)) if cpu else "-1")
        else:
            (cpu_dir / "cpu.max").write_text(f"{int(cpu * PERIOD_US)} {PERIOD_US}" if cpu else f"max {PERIOD_US}")

    def attach(self) -> None:
        """Join the groups; called in the child between fork and exec so every descendant inherits them."""
        pid = str(os.getpid())
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as handle:
                handle.write(pid)

    def oom_kills(self) -> int | None:
        """The kernel's OOM-kill count for the group, or None when this kernel does not report it."""
        s = self.support
        try:
            if s.version == "v1":
                text = (self.dirs[1] / "memory.oom_control").read_text()
            elif s.version == "v2":
                text = (self.dirs[0] / "memory.events").read_text()
            else:
                return None
        except (OSError, IndexError):
            return None
        match = re.search(r"oom_kill (\d+)", text)
        return int(match.group(1)) if match else None

    def memory_bytes(self) -> int | None:
        try:
            if self.support.version == "v1":
                return int((self.dirs[1] / "memory.usage_in_bytes").read_text())
            if self.support.version == "v2":
                return int((self.dirs[0] / "memory.current").read_text())
        except (OSError, IndexError, ValueError):
            pass
        return None

    def remove(self) -> None:
        """Move stragglers out and delete the groups; safe to call twice."""
        for d in self.dirs:
            remove_group(d)
        self.dirs = []


def remove_group(d: Path) -> None:
    if not d.exists():
        return
    try:
        pids = (d / "cgroup.procs").read_text().split()
    except OSError:
        pids = []
    parent_procs = d.parent / "cgroup.procs"
    for pid in pids:
        try:
            parent_procs.write_text(pid)
        except OSError:
            pass
    try:
        d.rmdir()
    except OSError:
        pass


def leftover_groups(support: CgroupSupport, prefix: str = PREFIX) -> list[Path]:
    """Every nightcap group under our bases (for cleanup of dead runs)."""
    found: list[Path] = []
    bases = {support.cpu_base, support.memory_base} - {None}
    cpuset = ROOT / "cpuset" / own_cgroup_path("cpuset").lstrip("/")
    if support.version == "v1" and support.cpu_base is not None and support.cpu_base.is_relative_to(ROOT) \
            and cpuset.is_dir():
        bases.add(cpuset)  # the CPU pinning's groups (platforms/cpu_pinning.py)
    for base in bases:
        assert base is not None
        if base.exists():
            found += [p for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    return found


RUN_STAMP = re.compile(r"^" + re.escape(PREFIX) + r"(?P<stamp>\d{8}-\d{6})-[0-9a-f]+-")


def stale_groups(support: CgroupSupport, now: datetime, older_than_s: float) -> list[Path]:
    """Nightcap groups no record points to any more (a run whose registry folder went with it, e.g. another working
    directory): empty (no process, no child group) and from a run that started more than `older_than_s` ago. A live
    run's groups hold its replicas and processes, so an empty one that old is a dead run's."""
    out = []
    groups = set(leftover_groups(support))
    if support.version == "v1" and support.memory_base is not None and support.memory_base.parent.is_dir():
        # memory groups live under the creating process's own memory cgroup, which another shell or service
        # session may not share (/process_api/<session>/nightcap-...): look in its siblings too
        groups |= {p for p in support.memory_base.parent.glob(f"*/{PREFIX}*") if p.is_dir()}
    for group in sorted(groups):
        match = RUN_STAMP.match(group.name)
        if not match:
            continue
        started = datetime.strptime(match["stamp"], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
        if (now - started).total_seconds() < older_than_s:
            continue
        try:
            empty = not (group / "cgroup.procs").read_text().split() and not any(p.is_dir() for p in group.iterdir())
        except OSError:
            continue
        if empty:
            out.append(group)
    return out
