"""Disjoint CPUs on one machine: the replicas on some, the rest of the run (flow, Prefect server, proxy, Locust)
on the others, so the generator does not steal the measured pods' time slices (and the other way round).

How: a cpuset cgroup (v1 `cpuset` hierarchy, or the v2 `cpuset` controller of our delegated subtree) where
writable; else `sched_setaffinity` on every thread of our processes (inherited by what they start); else
nothing, and `report()` says why. Needs at least 2 CPUs: ¼ of them (at least 1) for the run, the rest for
the replicas.

Policy: replicas stay on their CPUs only while the sum of their CPU limits fits in them. On 2 cores (1 for the
replicas) two pods of 1 CPU would otherwise share one core and measure half their capacity: then, and when a
replica has no CPU limit, replicas and the rest share every CPU for as long as that lasts, and the change is
reported (`changes`) and written as an event into the steps measured meanwhile.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil

from nightcap.platforms.cgroups import PREFIX, ROOT, own_cgroup_path, remove_group


@dataclass(frozen=True)
class Layout:
    replica_cpus: tuple[int, ...]
    other_cpus: tuple[int, ...]


def split_cpus(cpus: Sequence[int]) -> Layout | None:
    """The run's processes get the lowest ¼ of the CPUs (at least one), the replicas the rest; None below 2."""
    ordered = sorted(set(cpus))
    if len(ordered) < 2:
        return None
    others = max(1, len(ordered) // 4)
    return Layout(tuple(ordered[others:]), tuple(ordered[:others]))


def fits(limits: Sequence[float | None], replica_cpus: int) -> tuple[bool, str]:
    """Whether replicas with these CPU limits can be pinned to `replica_cpus` CPUs without squeezing them."""
    if not limits:
        return True, ""
    if any(limit is None or limit <= 0 for limit in limits):
        return False, "a replica has no CPU limit (it may use every core)"
    total = sum(limit for limit in limits if limit)
    if total > replica_cpus + 1e-9:
        return False, (f"{len(limits)} replica(s) with {total:g} CPU of limits exceed the {replica_cpus} "
                       f"CPU(s) reserved for replicas")
    return True, ""


def cpu_list(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def _tree(pid: int) -> list[int]:
    try:
        proc = psutil.Process(pid)
        return [pid] + [c.pid for c in proc.children(recursive=True)]
    except psutil.Error:
        return []


def describe(pid: int) -> str:
    """A process in words for the report: 'Prefect server (pid 12)'."""
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return f"pid {pid}"
    if pid == os.getpid():
        return f"flow process (pid {pid})"
    for needle, name in (("prefect", "Prefect server"), ("locust", "Locust"), ("nightcap.platforms.proxy", "proxy")):
        if needle in cmd and (needle != "prefect" or "server" in cmd or "uvicorn" in cmd):
            return f"{name} (pid {pid})"
    return f"{os.path.basename(cmd.split(' ')[0]) or 'process'} (pid {pid})"


class Cpuset:
    """cpuset groups `<prefix>others` and `<prefix>replicas` (v1), or `others` + each replica's own group (v2)."""

    def __init__(self, version: str, base: Path, name: str):
        self.version, self.base, self.name = version, base, name
        self.others = base / f"{name}-others"
        self.replicas = base / f"{name}-replicas" if version == "v1" else None
        self.replica_groups: list[Path] = []  # v2: the replicas' own cpu/memory groups

    @property
    def method(self) -> str:
        return f"cpuset (cgroup {self.version})"

    def dirs(self) -> list[Path]:
        return [d for d in (self.others, self.replicas) if d is not None]

    def setup(self, layout: Layout) -> None:
        if self.version == "v2":
            control = self.base / "cgroup.subtree_control"
            if "cpuset" not in control.read_text().split():
                control.write_text("+cpuset")
        mems = ""
        for name in ("cpuset.mems", "cpuset.effective_mems", "cpuset.mems.effective"):
            if (self.base / name).exists():
                mems = (self.base / name).read_text().strip()
                if mems:
                    break
        for group, cpus in ((self.others, layout.other_cpus), (self.replicas, layout.replica_cpus)):
            if group is None:
                continue
            group.mkdir(exist_ok=True)
            if mems and (group / "cpuset.mems").exists():
                (group / "cpuset.mems").write_text(mems)
            (group / "cpuset.cpus").write_text(cpu_list(cpus))

    def move_others(self, pids: Sequence[int]) -> list[int]:
        moved = []
        for pid in pids:
            try:
                (self.others / "cgroup.procs").write_text(str(pid))
                moved.append(pid)
            except OSError:
                pass  # a process that ended meanwhile, or one we may not move
        return moved

    def preexec(self, cpus: Callable[[], Sequence[int]]) -> Callable[[], None] | None:
        if self.replicas is None:
            return None
        procs = self.replicas / "cgroup.procs"

        def join() -> None:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        return join

    def add_replica_group(self, group: Path, cpus: Sequence[int]) -> None:
        if self.version == "v2" and (group / "cpuset.cpus").exists():
            (group / "cpuset.cpus").write_text(cpu_list(cpus))
            self.replica_groups.append(group)

    def apply(self, replica_cpus: Sequence[int], other_cpus: Sequence[int], **_: Any) -> None:
        # widen before narrowing, so a group never momentarily holds an empty or foreign set
        for group, cpus in ((self.others, other_cpus), (self.replicas, replica_cpus)):
            if group is not None and group.exists():
                (group / "cpuset.cpus").write_text(cpu_list(cpus))
        for group in list(self.replica_groups):
            if group.exists():
                (group / "cpuset.cpus").write_text(cpu_list(replica_cpus))
            else:
                self.replica_groups.remove(group)

    def release(self) -> None:
        for group in self.dirs():
            remove_group(group)  # moves what is left (our own process included) back to the parent


class _Affinity:
    """sched_setaffinity on every thread of our processes; children inherit it from the thread that starts them."""

    method = "sched_setaffinity"

    def __init__(self) -> None:
        self.original = sorted(os.sched_getaffinity(0))
        self.layout: Layout | None = None

    def dirs(self) -> list[Path]:
        return []

    def setup(self, layout: Layout) -> None:
        self.layout = layout

    def _set(self, pids: Sequence[int], cpus: Sequence[int]) -> list[int]:
        done = []
        for pid in pids:
            for tid in _threads(pid):
                try:
                    os.sched_setaffinity(tid, set(cpus))
                except OSError:
                    continue
            done.append(pid)
        return done

    def move_others(self, pids: Sequence[int]) -> list[int]:
        assert self.layout is not None
        return self._set(pids, self.layout.other_cpus)

    def preexec(self, cpus: Callable[[], Sequence[int]]) -> Callable[[], None]:
        def pin() -> None:
            os.sched_setaffinity(0, set(cpus()))
        return pin

    def add_replica_group(self, group: Path, cpus: Sequence[int]) -> None:
        pass

    def apply(self, replica_cpus: Sequence[int], other_cpus: Sequence[int], replica_pids: Sequence[int] = (),
              **_: Any) -> None:
        replicas = {p for pid in replica_pids for p in _tree(pid)}
        mine = [p for p in _tree(os.getpid()) if p not in replicas]
        self._set(mine, other_cpus)
        self._set(sorted(replicas), replica_cpus)

    def release(self) -> None:
        self._set(_tree(os.getpid()), self.original)


@dataclass
class CpuPinning:
    """The run's CPU layout on the local platform: set up at deploy, kept in step with the replicas, undone at teardown."""

    run_id: str
    enabled: bool = True
    root: Path = ROOT
    cpus: Sequence[int] | None = None  # default: the CPUs this process may run on
    method: str = "none"
    layout: Layout | None = None
    mode: str = "off"  # "pinned", "shared" or "off"
    note: str = ""
    pinned: list[str] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    _backend: Any = None

    def start(self, register: Callable[[Path], None] | None = None) -> None:
        """Split the CPUs and move this process and its children (the Prefect server, when we started it) to theirs."""
        if not self.enabled:
            self.note = "platform.pin_cpus is false"
            return
        available = list(self.cpus if self.cpus is not None else sorted(os.sched_getaffinity(0)))
        self.layout = split_cpus(available)
        if self.layout is None:
            self.note = f"{len(available)} CPU available: nothing to keep apart"
            return
        tried = []
        for backend in self._backends():
            try:
                backend.setup(self.layout)
                for d in backend.dirs():
                    if register:
                        register(d)
                self._backend = backend
                break
            except OSError as exc:
                tried.append(f"{getattr(backend, 'method', '?')}: {exc.strerror or exc}")
                try:
                    backend.release()
                except OSError:
                    pass
        if self._backend is None:
            self.note = "no way to pin here (" + "; ".join(tried) + ")"
            return
        self.method = self._backend.method
        moved = self._backend.move_others(_tree(os.getpid()))
        self.pinned = [describe(pid) for pid in moved] + ["and what they start (proxy, load generator)"]
        self.mode = "pinned"
        if tried:
            self.note = "fell back to " + self.method + " (" + "; ".join(tried) + ")"

    def _backends(self) -> list[Any]:
        out: list[Any] = []
        name = f"{PREFIX}{self.run_id}-cpus"
        v1 = self.root / "cpuset"
        if (v1 / "cpuset.cpus").exists() and os.access(v1, os.W_OK):
            out.append(Cpuset("v1", v1 / own_cgroup_path("cpuset").lstrip("/"), name))
        elif (self.root / "cgroup.controllers").exists():
            base = self.root / own_cgroup_path("").lstrip("/")
            if "cpuset" in (base / "cgroup.controllers").read_text().split() and os.access(base, os.W_OK):
                out.append(Cpuset("v2", base, name))
        if hasattr(os, "sched_setaffinity"):
            out.append(_Affinity())
        return out

    @property
    def active(self) -> bool:
        return self._backend is not None

    def dirs(self) -> list[Path]:
        """The cgroups (or cpusets) pinning made, to be removed with it; none when not active."""
        return list(self._backend.dirs()) if self._backend is not None else []

    def replica_cpus(self) -> tuple[int, ...]:
        assert self.layout is not None
        if self.mode == "pinned":
            return self.layout.replica_cpus
        return tuple(sorted(self.layout.replica_cpus + self.layout.other_cpus))

    def replica_preexec(self) -> Callable[[], None] | None:
        """Run in a replica's child between fork and exec: it joins the replicas' CPUs."""
        return self._backend.preexec(self.replica_cpus) if self.active else None

    def add_replica_group(self, group: Path) -> None:
        if self.active:
            self._backend.add_replica_group(group, self.replica_cpus())

    def update(self, limits: Sequence[float | None], replica_pids: Sequence[int] = ()) -> str | None:
        """Re-decide pinned or shared for the replicas now running; returns an event line when it changed."""
        if not self.active or self.layout is None:
            return None
        ok, why = fits(limits, len(self.layout.replica_cpus))
        mode = "pinned" if ok else "shared"
        if mode == self.mode:
            return None
        everything = tuple(sorted(self.layout.replica_cpus + self.layout.other_cpus))
        if mode == "pinned":
            self._backend.apply(self.layout.replica_cpus, self.layout.other_cpus, replica_pids=replica_pids)
            text = (f"cpu pinning: replicas back on CPU {cpu_list(self.layout.replica_cpus)}, the run on "
                    f"{cpu_list(self.layout.other_cpus)}")
        else:
            self._backend.apply(everything, everything, replica_pids=replica_pids)
            text = f"cpu pinning: replicas and the run share CPUs {cpu_list(everything)}: {why}"
        self.mode = mode
        self.changes.append({"at": round(time.time(), 3), "mode": mode, "replicas": len(limits),
                             "why": why or "the replicas' limits fit their CPUs again"})
        return text

    def stop(self) -> None:
        if self._backend is not None:
            try:
                self._backend.release()
            finally:
                self._backend = None

    def report(self) -> dict[str, Any]:
        """What `summary.json` says under `platform.cpu_pinning`."""
        out: dict[str, Any] = {"enabled": self.enabled, "method": self.method, "mode": self.mode}
        if self.layout is not None and self.method != "none":
            out.update(replica_cpus=list(self.layout.replica_cpus), other_cpus=list(self.layout.other_cpus),
                       pinned=self.pinned)
        out["changes"] = self.changes
        out["policy"] = ("replicas stay on their CPUs while their CPU limits add up to no more than those CPUs; "
                         "otherwise (or without a CPU limit) replicas and the run share every CPU and each "
                         "change is listed here and in the steps' events")
        if self.note:
            out["note"] = self.note
        return out
