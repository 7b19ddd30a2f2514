"""The config's sections about the nights as a series: where each night is stored (`store`), published
(`publish`) and kept (`retention`), and what it is judged against (`canary`, `regression`).

Apart from the measurement's sections (`config_sections.py`) because they decide what happens after a night is
measured; `nightcap.config` assembles both into `Config`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from pydantic import Field, model_validator

from nightcap.config_sections import Cores, MemoryBytes, Strict
from nightcap.quantities import parse_memory


class StoreConfig(Strict):
    url: str = "sqlite:///.nightcap/history.db"
    # how long a write keeps retrying a lost database (a restart) before the night fails for want of its history
    retry_s: float = Field(60.0, ge=0, le=3600)


class PublishConfig(Strict):
    """Where the night's answer is published besides the report folder and the history. The history stays the
    source of truth for the regression check; a publication that fails is a warning in the report, not a failed
    night."""

    # tags on the model version and one MLflow run per night, when target.model_uri is a tracking-server URI
    # (runs:/, models:/); false: nothing is written to MLflow
    mlflow: bool = True
    mlflow_experiment: str | None = Field(None, min_length=1, max_length=500)  # default: nightcap/<target.name>
    # a Prometheus Pushgateway (http(s)://host:port), pushed at the end of each run; its host must be in
    # publish.allowed_hosts
    pushgateway: str | None = None
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])

    @model_validator(mode="after")
    def _pushgateway_allowed(self) -> "PublishConfig":
        if self.pushgateway:
            parsed = urlparse(self.pushgateway)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"publish.pushgateway {self.pushgateway!r} must be an http(s) URL with a host, "
                                 "e.g. http://127.0.0.1:9091")
            if parsed.hostname not in self.allowed_hosts and "*" not in self.allowed_hosts:
                raise ValueError(f"publish.pushgateway host {parsed.hostname!r} is not in publish.allowed_hosts "
                                 f"{self.allowed_hosts}; add it there if you really mean to push to it")
        return self


class Keep(Strict):
    """What to keep: the newest `nights` and everything younger than `days`; beyond both it is removed.
    Neither set: kept forever."""

    nights: int | None = Field(None, ge=1, le=100_000)
    days: float | None = Field(None, gt=0, le=36_500)


class RetentionConfig(Strict):
    """Applied at the end of each run and by `nightcap cleanup --config`, per target: report folders under
    `reports_dir`, step rows of older runs in the history (their run row and headline figures stay for the
    trend and the regression check), and the Prefect artifacts of older runs."""

    reports_dir: str = "reports"
    reports: Keep = Field(default_factory=lambda: Keep(nights=30))
    steps: Keep = Field(default_factory=lambda: Keep(nights=60, days=90))
    artifacts: Keep = Field(default_factory=lambda: Keep(nights=30))


class CanaryConfig(Strict):
    """The platform canary: a reference server hashing `work_kb` KiB per request (fixed work, so its rate moves
    with the machine), one pod of `cpu`/`memory` on the model's platform, measured before the model for
    `windows` windows of `users` closed-loop users. It runs with the regression stage, which uses it."""

    enabled: bool = True
    work_kb: int = Field(2048, ge=1, le=1_048_576)
    cpu: Cores = 0.5
    memory: MemoryBytes = Field(default_factory=lambda: parse_memory("256Mi"))
    slots: int = Field(2, ge=1, le=256)
    users: int = Field(4, ge=1, le=1024)
    windows: int = Field(3, ge=1, le=10)
    # Kubernetes: any image with Python >= 3.9 runs it (the server is standard-library only; its source is
    # passed with `python -c`, so nothing is built or pushed)
    image: str = "python:3.12-slim"


class RegressionConfig(Strict):
    """The nightly alarm: one decision per night over every compared figure (docs/regression.md)."""

    # false alarms per night, over every figure and look together (0.005: one in 200 nights of pure noise)
    false_alarm_rate: float = Field(0.005, gt=0, lt=0.5)
    min_runs: int = Field(5, ge=2)  # comparable nights before any figure can alarm
    last_n: int = Field(20, ge=2, le=365)  # baseline nights at most: the newest before the nights looked at
    window_nights: int = Field(3, ge=1, le=7)  # also look at the mean of the last 2..window_nights nights
    threshold: float = Field(0.10, gt=0, lt=1)  # the smallest change worth an alarm
    fail_flow: bool = True
    # the change-point view of `nightcap history` and the trend plot (hindsight over this many comparable nights;
    # not the alarm): level changes with p < max_pvalue of at least `threshold`
    series_n: int = Field(30, ge=3, le=1000)
    max_pvalue: float = Field(0.001, gt=0, lt=1)
    # the platform canary moved when it changed beyond this fraction and beyond its own noise
    canary_threshold: float = Field(0.05, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _gone(cls, data: Any) -> Any:
        if isinstance(data, dict) and "noise_k" in data:
            raise ValueError("noise_k was removed: the alarm's noise band is now a prediction interval at "
                             "regression.false_alarm_rate per night (default 0.005); delete noise_k")
        return data

    @model_validator(mode="after")
    def _baseline_fits(self) -> "RegressionConfig":
        if self.last_n < self.min_runs:
            raise ValueError(f"regression.last_n ({self.last_n}) must be at least regression.min_runs "
                             f"({self.min_runs}): the baseline could never have enough nights")
        return self

    def alarm_settings(self) -> dict[str, Any]:
        """The keyword arguments of `check_regression`: the flow and bench/alarm.py pass the same ones."""
        return {"threshold": self.threshold, "false_alarm_rate": self.false_alarm_rate, "min_runs": self.min_runs,
                "last_n": self.last_n, "window_nights": self.window_nights,
                "canary_threshold": self.canary_threshold}

    @property
    def nights(self) -> int:
        """Comparable nights to read from the history: the baseline, the nights looked at, and the view."""
        return max(self.last_n + self.window_nights - 1, self.series_n)
