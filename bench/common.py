"""What the benchmarks share: a result table, a reference stack (platform + generator) torn down whatever
happens, process CPU accounting, and the machine line.

Benchmarks are not tests: they print figures. Each returns a `Table`; `bench.run_all` prints it and writes
`bench/results/<name>.csv`.
"""

from __future__ import annotations

import contextlib
import csv
import os
import platform as _platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil

from nightcap.config import Config, validate
from nightcap.load.local import LocalLocust
from nightcap.platforms.base import PodSpec
from nightcap.platforms.local import LocalPlatform
from nightcap.processes.ports import free_port
from nightcap.processes.registry import RunRegistry, kill_process_tree
from nightcap.targets.plan import plan_target

RESULTS = Path(__file__).with_name("results")


@dataclass
class Table:
    """One benchmark's figures: printed as a rich table, written as CSV."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *values: Any) -> None:
        self.rows.append(list(values))

    def write_csv(self, directory: Path = RESULTS) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            for row in self.rows:
                writer.writerow(["" if v is None else v for v in row])
        return path


def fmt(value: Any, digits: int = 1) -> Any:
    if value is None:
        return None
    if isinstance(value, float):
        return round(value, digits)
    return value


def reference_config(slots: int, service_ms: float, *, queue: int = 64, cpu_ms: float = 0.0,
                     cpu: float | None = None, replicas: int = 1, workers: int = 1, warmup_s: float = 0.5,
                     window_s: float = 1.5, p95_ms: float = 250.0, max_error_rate: float = 0.01,
                     max_users: int = 64, **search: Any) -> Config:
    """A validated Config for the reference target on the local platform (what the flow would build)."""
    return validate({
        "target": {"name": "bench-reference", "kind": "reference", "slots": slots, "service_ms": service_ms,
                   "queue": queue, "cpu_ms": cpu_ms, "path": "/invocations", "ready_path": "/ping"},
        "platform": {"kind": "local", "replicas": replicas, "cpu": cpu, "concurrency": slots,
                     "ready_timeout_s": 30},
        "load": {"workers": workers, "warmup_s": warmup_s, "window_s": window_s, "max_users": max(max_users, 1),
                 "max_duration_s": 600, "reconnect_s": 0},
        "search": {"max_users": max_users, **search},
        "slo": {"p95_ms": p95_ms, "max_error_rate": max_error_rate},
        "stages": ["single_client"],
    }, "bench")


@dataclass
class Stack:
    config: Config
    platform: LocalPlatform
    generator: LocalLocust
    registry: RunRegistry


@contextlib.contextmanager
def reference_stack(config: Config, workers: int = 1, workdir: Path | None = None) -> Iterator[Stack]:
    """Replicas behind the local proxy and a Locust master + workers, as the flow starts them; all stopped after.
    The tests that measure one step without a flow (tests/flows/test_accuracy.py) start theirs here too."""
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    registry = RunRegistry(run_id)
    workdir = Path(tempfile.mkdtemp(prefix="nightcap-bench-", dir=workdir))
    plan = plan_target(config)
    platform = LocalPlatform(config, plan, run_id, workdir / "replicas", registry=registry)
    t = config.target
    gen = LocalLocust(workers, plan.payloads, t.path, t.method, t.headers, t.request_timeout_s,
                      config.load.reconnect_s, registry=registry, logdir=workdir / "logs")
    try:
        p = config.platform
        platform.deploy(PodSpec(cpu=p.cpu, memory=p.memory, concurrency=p.concurrency or t.slots), p.replicas)
        gen.start()
        yield Stack(config, platform, gen, registry)
    finally:
        try:
            gen.stop()
        finally:
            platform.teardown()
            registry.close()


@contextlib.contextmanager
def spawned(argv: list[str], *, env: dict[str, str] | None = None, log: Path | None = None,
            ready_url: str | None = None, timeout_s: float = 20.0) -> Iterator[subprocess.Popen]:
    """A child process in its own session, killed (with its children) on the way out."""
    out = log.open("ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    if log:
        out.close()  # type: ignore[union-attr]
    try:
        if ready_url:
            wait_http(ready_url, proc, timeout_s)
        yield proc
    finally:
        if proc.poll() is None:
            kill_process_tree(proc.pid, grace_s=3.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited ({proc.returncode}) before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s")


def reference_server(slots: int, service_ms: float, queue: int = 64) -> contextlib.AbstractContextManager:
    """One reference server process on a free loopback port (no proxy, no platform)."""
    port = free_port()
    argv = [sys.executable, "-m", "nightcap.targets.reference_server", "--port", str(port), "--slots", str(slots),
            "--service-ms", str(service_ms), "--queue", str(queue)]

    @contextlib.contextmanager
    def run() -> Iterator[str]:
        with spawned(argv, ready_url=f"http://127.0.0.1:{port}/ping"):
            yield f"http://127.0.0.1:{port}"

    return run()


def cpu_seconds(pids: list[int], children: bool = False) -> float:
    """User + system CPU of the given processes (and, with `children`, all their live descendants)."""
    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            procs = [psutil.Process(pid)]
            if children:
                procs += procs[0].children(recursive=True)
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def machine_line() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = psutil.virtual_memory().total / 2**30
    return (f"nproc {os.cpu_count()}; CPU {model or _platform.processor() or 'unknown'}; memory {mem_gib:.1f} GiB; "
            f"python {_platform.python_version()}; {_platform.system()} {_platform.release()}; "
            f"date {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def which_locust() -> str:
    exe = Path(sys.executable).with_name("locust")
    return str(exe) if exe.exists() else "locust"
