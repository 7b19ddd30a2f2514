"""The model served is recorded, `nightcap history` marks the night it changed, and the regression check
names the change (a real SQLite history; milliseconds)."""

from __future__ import annotations

from rich.console import Console

from nightcap.analysis.regression import version_change
from nightcap.config import validate
from nightcap.results.history_cli import history_command
from nightcap.results.store import HistoryStore, version_label


def record(label: str, version: str) -> dict:
    return {"model_uri": "models:/wine-rf@champion", "label": label, "registered_model": "wine-rf",
            "version": version, "alias": "champion", "run_id": "abc", "signature": {"inputs": []}}


def test_history_marks_the_night_the_model_changed(tmp_path):
    url = f"sqlite:///{tmp_path}/history.db"
    config = validate({"target": {"name": "wine-rf", "kind": "mlflow", "model_uri": "models:/wine-rf@champion"},
                       "slo": {"p95_ms": 250}})
    store = HistoryStore(url)
    for i, version in enumerate(["2", "2", "3"]):
        store.start_run(f"r{i}", config, record(f"wine-rf v{version} @champion", version))
        store.finish_run(f"r{i}", "completed", {"saturation_rps": 200.0 - 40 * (version == "3")}, {})
    frame = store.history()
    store.close()
    assert frame["version"].tolist() == ["wine-rf v2 @champion"] * 2 + ["wine-rf v3 @champion"]
    console = Console(record=True, width=200)
    history_command(url, "wine-rf", 10, console=console)
    lines = [line for line in console.export_text().splitlines() if "wine-rf v" in line]
    assert len(lines) == 3 and "(was" not in lines[0] + lines[1]
    assert "wine-rf v3 @champion (was wine-rf v2 @champion)" in lines[2]


def test_version_label_prefers_the_model_label():
    assert version_label(record("wine-rf v3 @champion", "3")) == "wine-rf v3 @champion"
    assert version_label({"model_uri": "/m", "version": "uuid-1"}) == "uuid-1"  # bundled model, as before
    assert version_label({"image": "model:2"}) == "model:2"


def test_version_change_names_which_replaced_which():
    assert version_change("wine-rf v3", ["wine-rf v2", "wine-rf v2"]) == "wine-rf v3 replaced wine-rf v2"
    assert version_change("wine-rf v3", ["", "wine-rf v3"]) is None  # newest baseline run with a version
    assert version_change("wine-rf v3", []) is None
    assert version_change("", ["wine-rf v2"]) is None
