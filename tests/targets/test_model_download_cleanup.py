"""A downloaded model is freed after its run dies without `release` (SIGKILL), never while its run lives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nightcap.targets.plan import OWNER_FILE, reap_orphan_models


def _folder(root: Path, name: str, owner: int | None) -> Path:
    folder = root / name
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "MLmodel").write_text("flavors: {}\n")
    if owner is not None:
        (folder / OWNER_FILE).write_text(str(owner))
    return folder


def test_a_dead_runs_download_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    gone = _folder(tmp_path, "run-dead", dead_pid)
    mine = _folder(tmp_path, "run-live", os.getpid())
    parent = _folder(tmp_path, "run-parent", os.getppid())
    unknown = _folder(tmp_path, "run-unknown", None)
    other = _folder(tmp_path, "not-a-run", dead_pid)

    lines = reap_orphan_models(tmp_path)

    assert not gone.exists()
    assert len(lines) == 1 and f"pid {dead_pid}" in lines[0] and "run-dead" in lines[0]
    assert mine.exists() and parent.exists() and unknown.exists() and other.exists()


def test_no_models_folder_is_nothing_to_do(tmp_path: Path) -> None:
    assert reap_orphan_models(tmp_path / "absent") == []
