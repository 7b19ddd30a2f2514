"""The local generator: a Locust master and N worker processes on loopback (the `Generator` of `base.py`).

Locust is never imported here: it monkey-patches with gevent. We start it as processes and drive the
master's web API (`driver.py`), as a person would with the web UI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from nightcap.load.base import wait_for_workers
from nightcap.locust_env import API_KEY_VAR, LOCUST_ENTRY, LOCUST_SOURCES, locust_env
from nightcap.load.driver import LoadError, MasterClient
from nightcap.processes.ports import free_port
from nightcap.processes.registry import RunRegistry, stop_process


class MasterExited(Exception):
    """The master process ended while starting; `tail` is the end of its log."""

    def __init__(self, what: str, tail: str):
        super().__init__(f"the Locust master {what}")
        self.what, self.tail = what, tail


PORT_TAKEN = "Address already in use"


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, offset: int = 0, lines: int = 6) -> str:
    """The error lines of a log (from `offset` on), else its last lines."""
    text = _read_from(path, offset).splitlines()
    if not text:
        return "(empty log)"
    errors = [line for line in text if "Error" in line or PORT_TAKEN in line]
    return "\n".join((errors or text)[-lines:])


class LocalLocust:
    """Master + workers as local processes; `workers=1` is the single-client case."""

    cpu_source = "process CPU counters over the window"

    def __init__(self, workers: int, payloads: list[bytes], path: str, method: str, headers: dict[str, str],
                 timeout_s: float, reconnect_s: float, api_key: str | None = None,
                 registry: RunRegistry | None = None, logdir: Path | None = None,
                 worker_cpu: float | None = None, key_source_var: str | None = None):
        self.workers = workers
        self.worker_cpu = worker_cpu
        self._cgroups: list = []
        self.registry = registry
        self._tmp = Path(tempfile.mkdtemp(prefix="nightcap-locust-"))
        self.logdir = Path(logdir) if logdir else self._tmp
        self.logdir.mkdir(parents=True, exist_ok=True)
        payload_file = self._tmp / "payloads.jsonl"
        payload_file.write_bytes(b"\n".join(payloads) + b"\n")
        self.web_port, self.bind_port = free_port(), free_port()
        self.env = {**os.environ, **locust_env(path, method, headers, timeout_s, reconnect_s, str(payload_file),
                                               with_api_key=bool(api_key))}
        for var in (API_KEY_VAR, key_source_var):  # where the flow read the key from (target.api_key_env)
            if var:
                self.env.pop(var, None)
        if registry is not None:  # so the run's generators can be found by run id, like its replicas
            self.env["NIGHTCAP_RUN_ID"] = registry.record.run_id
        # The master sends no requests: the key goes into the workers' environment only, never on a command
        # line (ps would show it) or in a file.
        self.master_env = dict(self.env)
        if api_key:
            self.env[API_KEY_VAR] = api_key
        self.master: subprocess.Popen | None = None
        self.worker_procs: list[subprocess.Popen] = []
        self.client = MasterClient(f"http://127.0.0.1:{self.web_port}")
        self._cpu_marks: dict[int, float] = {}
        self._mark_at = 0.0

    @property
    def master_url(self) -> str:
        return self.client.base_url

    def _locust(self) -> str:
        exe = Path(sys.executable).with_name("locust")
        return str(exe) if exe.exists() else (shutil.which("locust") or "locust")

    def _limit(self, what: str):  # type: ignore[no-untyped-def]
        """A CPU-capped cgroup for a worker when load.worker_cpu is set and the machine allows it."""
        if not self.worker_cpu or not what.startswith("worker"):
            return None
        from nightcap.platforms.cgroups import PREFIX, ReplicaCgroup, detect

        support = detect()
        if not support.enforced:
            return None
        run = self.registry.record.run_id if self.registry else self._tmp.name
        group = ReplicaCgroup(support, f"{PREFIX}{run}-gen-{what}-{len(self._cgroups)}")
        group.create(self.worker_cpu, None)
        self._cgroups.append(group)
        for d in group.dirs:
            if self.registry:
                self.registry.add_cgroup(d)
        return group

    def _spawn(self, args: list[str], what: str) -> subprocess.Popen:
        log = (self.logdir / f"{what}.log").open("ab")
        group = self._limit(what)
        env = self.master_env if what == "master" else self.env
        # the entry in the package's directory: the files it imports by bare name sit beside it
        proc = subprocess.Popen([self._locust(), "-f", str(LOCUST_SOURCES[LOCUST_ENTRY]), *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                preexec_fn=group.attach if group else None)
        log.close()
        if self.registry:
            self.registry.add_process(proc.pid, f"locust {what}")
        return proc

    def start(self, timeout_s: float = 60.0, attempts: int = 3) -> None:
        """Start master and workers; if the master dies while starting (a port taken meanwhile), retry on new ports."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout_s)
                return
            except MasterExited as exc:
                self._stop_processes()
                if attempt == attempts:
                    raise LoadError(f"the Locust master failed to start {attempts} times ({exc.what}); "
                                    f"last lines of {self.logdir}/master.log:\n{exc.tail}") from None
                self.web_port, self.bind_port = free_port(), free_port()
                self.client.close()
                self.client = MasterClient(f"http://127.0.0.1:{self.web_port}")

    def _start_once(self, timeout_s: float) -> None:
        log = self.logdir / "master.log"
        offset = log.stat().st_size if log.exists() else 0  # logs append across attempts
        self.master = self._spawn(["--master", "--class-picker", "--web-host", "127.0.0.1", "--web-port", str(self.web_port),
                                   "--master-bind-host", "127.0.0.1", "--master-bind-port", str(self.bind_port),
                                   "--loglevel", "WARNING"], "master")
        for i in range(self.workers):
            self.worker_procs.append(self._spawn(["--worker", "--master-host", "127.0.0.1", "--master-port",
                                                  str(self.bind_port), "--loglevel", "WARNING"], f"worker-{i}"))
        master = self.master

        def check(error: Exception | None) -> None:
            exited = master.poll() is not None
            # A master whose web port was taken logs it at once but lingers ~10 s before exiting.
            if (exited or error is not None) and PORT_TAKEN in _read_from(log, offset):
                raise MasterExited("could not bind its port", _tail(log, offset))
            if exited:
                raise MasterExited(f"exited ({master.returncode})", _tail(log, offset))

        wait_for_workers(self.client, self.workers, timeout_s, check=check, where=str(self.logdir))

    def alive_workers(self) -> int:
        return sum(1 for p in self.worker_procs if p.poll() is None)

    def restart_dead_workers(self, timeout_s: float = 30.0) -> int:
        """Replace workers that died, and wait until the master counts them; returns how many were replaced.

        Without this a dead worker invalidates every later window too, and the search gives up.
        """
        dead = [i for i, p in enumerate(self.worker_procs) if p.poll() is not None]
        if not dead:
            return 0
        try:
            before = set(self.client.window().get("active_workers", []))
        except httpx.HTTPError:
            before = set()
        for i in dead:
            old = self.worker_procs[i]
            if self.registry:
                self.registry.remove_process(old.pid)
            self.worker_procs[i] = self._spawn(["--worker", "--master-host", "127.0.0.1", "--master-port",
                                                str(self.bind_port), "--loglevel", "WARNING"], f"worker-{i}")
        wait_for_workers(self.client, self.workers, timeout_s, joined_since=before, joined=len(dead),
                         where=str(self.logdir))
        return len(dead)

    def mark_cpu(self) -> None:
        """Start a CPU window for the generator processes."""
        self._cpu_marks = {p.pid: _cpu_seconds(p.pid) for p in self.worker_procs}
        self._mark_at = time.monotonic()

    def generator_cpu_pct(self) -> list[float]:
        """Each worker's CPU since `mark_cpu`, in % of one core (or of its cap): near 100 means the generator is the limit."""
        elapsed = max(time.monotonic() - self._mark_at, 1e-6)
        cap = min(self.worker_cpu or 1.0, 1.0)  # a capped worker is saturated at its cap, not at a full core
        return [100.0 * max(_cpu_seconds(p.pid) - self._cpu_marks.get(p.pid, 0.0), 0.0) / elapsed / cap
                for p in self.worker_procs]

    def stop(self) -> None:
        try:
            self.client.idle()  # the processes are ended next: no need to wait for the master's /stop poll
        except httpx.HTTPError:
            pass
        self.client.close()
        self._stop_processes()
        for group in self._cgroups:
            for d in list(group.dirs):
                if self.registry:
                    self.registry.remove_cgroup(d)
            group.remove()
        self._cgroups = []
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _stop_processes(self) -> None:
        for proc in self.worker_procs + ([self.master] if self.master else []):
            stop_process(proc, self.registry)
        self.worker_procs = []
        self.master = None

    def __enter__(self) -> "LocalLocust":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0
