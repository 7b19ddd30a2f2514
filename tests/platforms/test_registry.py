"""processes/registry.py: a dead run's cgroups are removed with the remover its caller passes (the registry sits
below platforms, so it does not import the local platform's cgroups module)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from nightcap.processes.registry import RunRecord, cleanup_dead


def _dead_run(directory: Path, group: Path) -> None:
    directory.mkdir()
    record = RunRecord("run-dead", owner_pid=999_999_999, owner_started=0.0, heartbeat=0.0, cgroups=[str(group)])
    (directory / "run-dead.json").write_text(json.dumps(asdict(record)))


def test_a_dead_runs_cgroup_goes_through_the_callers_remover(tmp_path: Path) -> None:
    group = tmp_path / "nightcap-run-dead-0"
    group.mkdir()
    _dead_run(tmp_path / "runs", group)
    removed: list[Path] = []
    lines = cleanup_dead(tmp_path / "runs", remove_cgroup=lambda d: (removed.append(d), d.rmdir()))
    assert removed == [group] and not group.exists()
    assert lines == [f"run run-dead: removed cgroup {group}"]
    assert not (tmp_path / "runs" / "run-dead.json").exists()


def test_without_a_remover_the_cgroup_is_left_alone(tmp_path: Path) -> None:
    group = tmp_path / "nightcap-run-dead-0"
    group.mkdir()
    _dead_run(tmp_path / "runs", group)
    assert cleanup_dead(tmp_path / "runs") == []
    assert group.is_dir()
