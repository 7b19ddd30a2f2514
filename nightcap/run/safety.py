"""Safety limits checked before anything starts (the run lock is `lock.py`)."""

from __future__ import annotations

from urllib.parse import urlparse

from nightcap.config import Config, ConfigError


def check_safety_limits(cfg: Config) -> None:
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
