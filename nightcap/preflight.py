"""Checks made before anything starts: safety limits, the target's host, one run per target at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from urllib.parse import urlparse

from nightcap.config import Config, ConfigError

LOCK_DIR = Path(".nightcap/locks")


def preflight(cfg: Config) -> None:
    """Refuse, with the reason, a run that would break the safety limits; nothing has started yet."""
    problems: list[str] = []
    t, load, search = cfg.target, cfg.load, cfg.search
    if t.url:
        host = urlparse(t.url).hostname
        if host not in t.allowed_hosts and "*" not in t.allowed_hosts:
            problems.append(f"target.url: host {host!r} is not in target.allowed_hosts {t.allowed_hosts}")
    if search.max_users > load.max_users:
        problems.append(f"search.max_users ({search.max_users}) exceeds load.max_users ({load.max_users})")
    if "autoscale" in cfg.stages:
        phases = cfg.autoscale.phases or []
        total = sum(p.duration_s for p in phases)
        if total > load.max_duration_s:
            problems.append(f"autoscale.phases last {total:.0f}s, more than load.max_duration_s ({load.max_duration_s:.0f}s)")
    if cfg.platform.kind == "local" and cfg.platform.replicas > 64:
        problems.append(f"platform.replicas {cfg.platform.replicas}: the local platform runs at most 64 replicas")
    if cfg.platform.kind == "local" and cfg.target.kind == "url":
        pass  # an external URL is measured as it is: the platform only observes nothing
    if problems:
        raise ConfigError(problems, "safety limits")


class RunLock:
    """One run per target at a time on this machine: two at once would measure each other."""

    def __init__(self, target: str, directory: Path = LOCK_DIR):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{target}.lock"
        self.handle = None

    def __enter__(self) -> "RunLock":
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RuntimeError(
                f"another nightcap run against target {self.path.stem!r} is in progress ({owner}); "
                "wait for it to finish, or use a different target.name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self.handle = handle
        return self

    def check(self) -> None:
        """Refuse now if another run holds the lock (taken and released at once: the flow takes it for real)."""
        with self:
            pass

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
