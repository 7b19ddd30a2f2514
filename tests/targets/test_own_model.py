"""One's own MLflow model on the first try, with real MLflow serving and a real local tracking store.

One module, one SQLite tracking store and registry, built once: a model folder saved with an input example,
one saved with only a signature, one with neither, and a registered model (version 1, alias `champion`).
Each runs `single_client` to a saturation point with no payload configured; a rejected payload stops the run
right after deploy; a URI that resolves to nothing is refused before anything starts; `nightcap init`
writes a config that validates and runs. Windows are short: this module costs about a minute and a half.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nightcap.cli import app
from nightcap.processes.ports import free_port

pytestmark = pytest.mark.slow

NIGHTCAP = str(Path(sys.executable).parent / "nightcap")
REGISTERED = "wine-rf"
# these runs test serving one's own model, not the knee: 1, 2 and 4 users, one short window each, keep each
# run near 15 s (a knee above 4 users is reported as a lower bound, which still answers)
SHORT = ['stages=["single_client"]', "search.max_users=4", "search.max_windows=1", "search.refine_steps=0",
         "load.warmup_s=0.5", "load.window_s=1", "load.verify_s=0"]


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The models every test here uses, saved and registered once through MLflow's own APIs."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("mlflow")
    tracking = f"sqlite:///{root}/mlflow.db"
    data = load_wine(as_frame=True)
    features = data.frame[data.feature_names].astype("float64")
    model = RandomForestClassifier(n_estimators=5, random_state=7).fit(features, data.target)
    signature = infer_signature(features.head(5), model.predict(features.head(5)))
    common = dict(serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                  pip_requirements=["scikit-learn", "cloudpickle"])
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(model, str(root / "with-example"), input_example=features.head(3), **common)
        # MLflow 3's default format (skops), as a new user saves a model: nightcap's environment must load it
        linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, data.target)
        mlflow.sklearn.save_model(linear, str(root / "signature-only"), signature=signature,
                                  pip_requirements=["scikit-learn", "skops"])
        mlflow.sklearn.save_model(model, str(root / "bare"), **common)
        # through the environment, as a user's script would; restored after (mlflow.set_tracking_uri would
        # leave MLFLOW_TRACKING_URI set for every later test)
        saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        os.environ["MLFLOW_TRACKING_URI"] = tracking
        try:
            # artifacts beside the store, not in ./mlruns of whatever directory the suite runs from
            experiment = MlflowClient().create_experiment("own-model", artifact_location=(root / "artifacts").as_uri())
            with mlflow.start_run(experiment_id=experiment) as run:
                mlflow.sklearn.log_model(model, name="model", signature=signature, input_example=features.head(2),
                                         registered_model_name=REGISTERED, **common)
            MlflowClient().set_registered_model_alias(REGISTERED, "champion", "1")
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None)
                if value is not None:
                    os.environ[key] = value
    return {"root": root, "tracking": tracking, "run_id": run.info.run_id}


def config_for(tmp_path: Path, **target: Any) -> Path:
    cfg = {
        "target": {"name": "own-model", "kind": "mlflow", "startup_timeout_s": 60, **target},
        "platform": {"kind": "local", "replicas": 1, "cpu": 1, "concurrency": 1, "ready_timeout_s": 60},
        "slo": {"p95_ms": 500, "max_error_rate": 0.01},
        "stages": ["single_client"],
        "store": {"url": f"sqlite:///{tmp_path}/history.db"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_flow(tmp_path: Path, config: Path, overrides: list[str] = SHORT) -> tuple[Any, dict[str, Any], str]:
    from flows.capacity_check import capacity_check

    out = tmp_path / "out"
    state = capacity_check(config=str(config), overrides=list(overrides), out=str(out), return_state=True)
    return state, json.loads((out / "summary.json").read_text()), (out / "report.md").read_text()


def assert_saturated(state: Any, summary: dict[str, Any]) -> None:
    assert state.is_completed(), state.message
    sat = summary["single_client"]["saturation"]
    # the model answered and was measured: whether its knee lies below the short search's 4 users depends on the
    # machine (search accuracy is tests/flows/test_accuracy.py's), so a lower bound counts here too
    assert sat["rps"] and sat["rps"] > 5 and sat["users"] >= 1, summary["single_client"]["levels"]
    assert sat["found"] or "search.max_users" in sat["stop_reason"], sat
    assert summary["status"] == "completed"
    levels = summary["single_client"]["levels"]
    assert all(lv["error_rate"] == 0 for lv in levels if lv["good"]), levels


def test_a_folder_saved_with_only_a_signature_gets_synthetic_rows(prefect_api, mlflow_store, leftovers, tmp_path):
    state, summary, report = run_flow(tmp_path, config_for(tmp_path, model_uri=str(mlflow_store["root"] / "signature-only")))
    assert_saturated(state, summary)
    payload = summary["target"]["payload"]
    assert payload["synthetic"] and payload["source"].startswith("synthetic rows from the model's signature")
    assert "synthetic" in report.split("## Stages")[0]  # said near the top, where the answer is
    version = summary["target"]["version"]
    assert version["signature"]["inputs"][0] == {"type": "double", "name": "alcohol", "required": True}
    assert version["registered_model"] is None and version["flavors"] == ["python_function", "sklearn"]


def test_registered_version_is_served_and_recorded(prefect_api, mlflow_store, leftovers, tmp_path):
    config = config_for(tmp_path, model_uri=f"models:/{REGISTERED}/1", tracking_uri=mlflow_store["tracking"])
    state, summary, _ = run_flow(tmp_path, config)
    assert_saturated(state, summary)
    version = summary["target"]["version"]
    assert (version["registered_model"], version["version"], version["alias"]) == (REGISTERED, "1", None)
    assert version["run_id"] == mlflow_store["run_id"] and version["label"] == f"{REGISTERED} v1"
    assert summary["target"]["payload"]["source"] == "the model's input example"
    from nightcap.results.store import HistoryStore

    store = HistoryStore(f"sqlite:///{tmp_path}/history.db")
    try:
        frame = store.history()
    finally:
        store.close()
    assert frame["version"].tolist() == [f"{REGISTERED} v1"]
    assert not list((tmp_path / ".nightcap" / "models").glob("run-*")), "the run's download was not removed"


def test_an_alias_resolves_through_the_environment(prefect_api, mlflow_store, leftovers, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store["tracking"])
    state, summary, _ = run_flow(tmp_path, config_for(tmp_path, model_uri=f"models:/{REGISTERED}@champion"))
    assert_saturated(state, summary)
    version = summary["target"]["version"]
    assert (version["registered_model"], version["version"], version["alias"]) == (REGISTERED, "1", "champion")
    assert version["label"] == f"{REGISTERED} v1 @champion"


def test_init_writes_a_config_that_validates_and_runs(prefect_api, mlflow_store, leftovers, tmp_path):
    """The README's path from the bundled model to one's own: init, validate, run (a folder with an example)."""
    model = mlflow_store["root"] / "with-example"
    out = tmp_path / "configs" / "wine-own.yaml"
    runner = CliRunner()
    made = runner.invoke(app, ["init", str(model), "--name", "wine-own", "--out", str(out)])
    assert made.exit_code == 0, made.output
    assert f"nightcap run {out}" in " ".join(made.output.split())
    text = out.read_text()
    assert "# payload: the model's saved input example" in text and "p95_ms" in text
    assert yaml.safe_load(text)["stages"] == ["tune", "single_client", "multi_client", "scaling", "sizing",
                                              "autoscale", "regression"]
    checked = runner.invoke(app, ["validate", str(out)])
    assert checked.exit_code == 0, checked.output
    state, summary, _ = run_flow(tmp_path, out, SHORT + [f"store.url=sqlite:///{tmp_path}/history.db"])
    assert_saturated(state, summary)
    assert summary["target"]["payload"]["source"] == "the model's input example"
    assert summary["target"]["version"]["model_uri"] == str(model)


def test_a_rejected_payload_stops_right_after_deploy(prefect_api, mlflow_store, leftovers, tmp_path):
    (tmp_path / "bad.json").write_text('{"inputs": [[1.0, 2.0, 3.0]]}')
    config = config_for(tmp_path, model_uri=str(mlflow_store["root"] / "with-example"),
                        payload_file=str(tmp_path / "bad.json"))
    t0 = time.monotonic()
    done = subprocess.run([NIGHTCAP, "run", str(config), "--out", str(tmp_path / "out")], cwd=tmp_path,
                          env=leftovers.env(PREFECT_API_URL=prefect_api, NIGHTCAP_EXTERNAL_API="1"),
                          capture_output=True, text=True, timeout=180)
    wall = time.monotonic() - t0
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, said
    assert "the model answered 400 Bad Request to the payload: {" in said and "check target.payload_file" in said
    last = done.stderr.strip().splitlines()[-1]  # the CLI's own closing line carries the reason
    assert last.startswith("run failed:") and "400 Bad Request" in last and "INVALID_PARAMETER_VALUE" in last, last
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stages"]["single_client"]["status"] == "skipped"
    assert not (tmp_path / "out" / "steps.csv").exists(), "no load may be sent after a refused smoke request"
    assert wall - summary["deploy_s"] < 60, (wall, summary["deploy_s"])
    assert "the model answered 400 Bad Request" in (tmp_path / "out" / "report.md").read_text().splitlines()[0]


@pytest.mark.parametrize("uri, said", [
    ("{root}/no-such-folder", "no such folder (tried: the local folder {root}/no-such-folder)"),
    ("file://{root}", "the folder has no MLmodel file"),
    ("models:/wine-rf/9", "Model Version (name=wine-rf, version=9) not found (tried: tracking store sqlite:///"),
    ("models:/wine-rf@nope", "alias nope not found"),
    ("models:/no-such-model@champion", "no-such-model"),
    ("runs:/0123456789abcdef/model", "Run with id=0123456789abcdef not found"),
    ("{root}/bare", "neither an input example nor a signature"),
])
def test_an_unresolvable_uri_is_refused_before_anything_starts(mlflow_store, tmp_path, monkeypatch, uri, said):
    monkeypatch.chdir(tmp_path)
    root = mlflow_store["root"]
    config = config_for(tmp_path, model_uri=uri.format(root=root), tracking_uri=mlflow_store["tracking"])
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["run", str(config)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "target.model_uri" in text and said.format(root=root) in text, text
    assert "Traceback" not in text and "Prefect API" not in text
    assert time.monotonic() - t0 < 20


def test_an_unreachable_tracking_server_is_refused_in_seconds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    config = config_for(tmp_path, model_uri=f"models:/{REGISTERED}/1", tracking_uri=dead)
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["run", str(config)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and f"tried: tracking store {dead} (target.tracking_uri)" in text, text
    assert "Traceback" not in text and time.monotonic() - t0 < 30
    # and with no tracking URI anywhere, a models:/ URI says which settings to use instead of creating mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = config_for(tmp_path, model_uri=f"models:/{REGISTERED}/1")
    result = CliRunner().invoke(app, ["run", str(config)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "set target.tracking_uri or MLFLOW_TRACKING_URI" in text, text
    assert not (tmp_path / "mlflow.db").exists()


def test_a_run_that_measures_no_saturation_point_fails_with_the_reason(prefect_api, leftovers, tmp_path):
    """An SLO no level can meet (p95 under 2 ms from a 20 ms server): failed, the reason first in report.md."""
    cfg = {"target": {"name": "no-answer", "kind": "reference", "slots": 4, "service_ms": 20},
           "platform": {"kind": "local", "replicas": 1, "cpu": None}, "slo": {"p95_ms": 2},
           "stages": ["single_client"], "store": {"url": f"sqlite:///{tmp_path}/history.db"}}
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(cfg))
    state, summary, report = run_flow(tmp_path, tmp_path / "ref.yaml")
    assert state.is_failed()
    assert "no saturation point was measured: no load level met the SLO: p95" in state.message
    assert summary["status"] == "failed" and summary["failure"].startswith("no saturation point was measured")
    assert report.splitlines()[0].startswith("**Run failed**: no saturation point was measured: no load level met the SLO")
    from nightcap.results.store import HistoryStore

    store = HistoryStore(f"sqlite:///{tmp_path}/history.db")
    try:
        assert store.history()["status"].tolist() == ["failed"]
    finally:
        store.close()


@pytest.mark.parametrize("case", ["refused", "timeout"])
def test_a_url_target_that_does_not_answer_stops_at_the_smoke_request(prefect_api, leftovers, tmp_path, case):
    import socket

    listener = None
    port = free_port()
    if case == "timeout":  # accepts the connection, never answers
        listener = socket.socket()
        listener.bind(("127.0.0.1", port))
        listener.listen(4)
    cfg = {"target": {"name": "url-smoke", "kind": "url", "url": f"http://127.0.0.1:{port}", "request_timeout_s": 1},
           "slo": {"p95_ms": 500}, "stages": ["single_client"], "store": {"url": f"sqlite:///{tmp_path}/history.db"}}
    (tmp_path / "url.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    try:
        state, summary, report = run_flow(tmp_path, tmp_path / "url.yaml")
    finally:
        if listener is not None:
            listener.close()
    assert state.is_failed() and time.monotonic() - t0 < 30
    expected = ("(connection refused); check target.url" if case == "refused"
                else "did not answer the first request within 1 s (target.request_timeout_s)")
    assert expected in summary["failure"] and expected in state.message
    assert summary["stages"]["single_client"]["status"] == "skipped"
    assert not (tmp_path / "out" / "steps.csv").exists()
