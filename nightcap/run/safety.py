"""Safety limits checked before anything starts, beyond what config validation already refuses.

`nightcap.config` refuses a target host outside `target.allowed_hosts` and `search.max_users` above
`load.max_users`; these are the limits that depend on several sections at once or on the platform.
(The run lock is `lock.py`.)
"""

from __future__ import annotations

from nightcap.config import Config, ConfigError

LOCAL_MAX_REPLICAS = 64


def check_safety_limits(cfg: Config) -> None:
    """Refuse, with the reason, a run that would break the safety limits; nothing has started yet."""
    problems: list[str] = []
    if "autoscale" in cfg.stages:
        total = sum(p.duration_s for p in cfg.autoscale.phases or [])
        if total > cfg.load.max_duration_s:
            problems.append(f"autoscale.phases last {total:.0f}s, more than load.max_duration_s "
                            f"({cfg.load.max_duration_s:.0f}s); shorten the phases or raise the limit")
    if cfg.platform.kind == "local" and cfg.platform.replicas > LOCAL_MAX_REPLICAS:
        problems.append(f"platform.replicas {cfg.platform.replicas}: the local platform runs at most "
                        f"{LOCAL_MAX_REPLICAS} replicas")
    if problems:
        raise ConfigError(problems, "safety limits")
