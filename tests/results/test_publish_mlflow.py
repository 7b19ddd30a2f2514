"""The night's answer on the model's MLflow version and in its experiment (issue 27, part 1).

Fast: which tags, metrics and params a summary.json gives (nightcap/results/mlflow_fields.py), every key read
held against the golden key list, secrets left out. Slow, against a real `mlflow server` (SQLite backend, proxied
artifacts) on a loopback port with a model registered through MLflow's own APIs: a short night on `models:/name/1`
leaves its tags on version 1 and one run with metrics, params and artifacts in `nightcap/<target>`; an alias and a
`runs:/` URI tag the version they name; a dead or stopped server is a bounded warning, and the night still completes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from nightcap.config import Config, validate
from nightcap.results import mlflow_fields as fields
from nightcap.results.mlflow_fields import ModelVersionRef
from nightcap.processes.ports import free_port

ROOT = Path(__file__).resolve().parents[1]  # tests/
NAME = "wine-night"
CHECKED = datetime(2026, 12, 4, 2, 30, tzinfo=timezone.utc)
GIB = 1024 ** 3


def night(**changes: Any) -> dict[str, Any]:
    """A completed night's summary.json, with the keys the publication reads (values as summary.py writes them)."""
    summary: dict[str, Any] = {
        "run_id": "20261204-020000-ab12cd", "status": "completed", "verdict": "completed", "config_hash": "c0ffee",
        "answer": "one pod of cpu=1 serves 60.25 rps", "target": {"name": "wine", "kind": "mlflow"},
        "saturation": {"rps": 120.5, "users": 4, "rps_ci": [110.0, 131.0], "inconclusive": None},
        "operating_point": {"rps": 84.35, "users": 3, "rps_ci": [77.0, 91.7], "p95_ms": 41.0, "p95_ci": [38.0, 45.0]},
        "slo_capacity": {"users": 6, "rps": 118.0, "rps_ci": None, "rate_rps": 100.0,
                         "rate_rps_interval": [95.0, 104.0]},
        "rps_per_core": 120.5,
        "platform": {"cpu": 1.0, "memory": GIB, "concurrency": 2},
        "capacity": {"per_pod": {"rps": 60.25, "ci": [55.0, 65.5], "replicas": 2,
                                 "pod": {"cpu": 1.0, "memory": GIB, "concurrency": 2}}},
        "regression": {"verdict": "ok"},
        "canary": {"rps_per_core": 300.0, "rps_ci": [290.0, 310.0]},
        "warnings": [],
    }
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = summary
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return summary


def config(publish: dict[str, Any] | None = None, **target: Any) -> Config:
    return validate({"target": {"name": "wine", "kind": "mlflow", "model_uri": "models:/wine/3", **target},
                     "slo": {"p95_ms": 500}, "stages": ["single_client"], "publish": publish or {}})


# --- the mapping (pure) ----------------------------------------------------------------------------------------------


def test_the_version_tags_are_tonights_figures_from_the_summary() -> None:
    tags = fields.version_tags(night(), CHECKED)
    assert tags == {"nightcap.rps_per_pod": "60.25", "nightcap.pod": "cpu=1 memory=1Gi concurrency=2",
                    "nightcap.operating_rps": "84.35", "nightcap.p95_ms_at_operating": "41.0",
                    "nightcap.checked_at": "2026-12-04T02:30:00+00:00", "nightcap.verdict": "ok",
                    "nightcap.run_id": "20261204-020000-ab12cd"}
    assert tuple(tags) == fields.VERSION_TAGS


@pytest.mark.parametrize("status, verdict, regression, expected", [
    ("completed", "completed", {"verdict": "ok"}, "ok"),
    ("completed", "completed", {"verdict": "regressed"}, "regressed"),
    ("completed", "completed", {"verdict": "insufficient history"}, "inconclusive"),
    ("completed", "completed", {"verdict": "platform changed"}, "inconclusive"),
    ("completed", "completed", None, "inconclusive"),  # no regression stage tonight
    ("failed", "failed", {"verdict": "ok"}, "inconclusive"),
    ("completed", "failed", {"verdict": "regressed"}, "inconclusive"),
])
def test_the_verdict_is_the_regression_checks_or_inconclusive(status, verdict, regression, expected) -> None:
    summary = night(status=status, verdict=verdict)
    if regression is None:
        del summary["regression"]
    else:
        summary["regression"] = regression
    assert fields.night_verdict(summary) == expected
    assert fields.version_tags(summary, CHECKED)["nightcap.verdict"] == expected


def test_an_inconclusive_headline_empties_the_figures_it_would_have_given() -> None:
    """As in the history: an inconclusive stage's figures are recorded nowhere; an older night's tag is blanked."""
    summary = night(saturation__inconclusive="the knee moved between windows")
    tags = fields.version_tags(summary, CHECKED)
    assert tags["nightcap.rps_per_pod"] == tags["nightcap.operating_rps"] == tags["nightcap.p95_ms_at_operating"] == ""
    assert tags["nightcap.pod"] == "cpu=1 memory=1Gi concurrency=2"
    assert fields.metrics(summary) == {"canary_rps_per_core": 300.0, "canary_rps_per_core_low": 290.0,
                                       "canary_rps_per_core_high": 310.0}


def test_the_metrics_are_the_headline_figures_with_their_intervals() -> None:
    assert fields.metrics(night()) == {
        "saturation_rps": 120.5, "saturation_rps_low": 110.0, "saturation_rps_high": 131.0,
        "saturation_users": 4.0, "rps_per_core": 120.5,
        "operating_rps": 84.35, "operating_rps_low": 77.0, "operating_rps_high": 91.7,
        "p95_at_operating_ms": 41.0, "p95_at_operating_ms_low": 38.0, "p95_at_operating_ms_high": 45.0,
        "slo_users": 6.0, "slo_rps": 118.0,  # measured in one window: no interval
        "rps_per_pod": 60.25, "rps_per_pod_low": 55.0, "rps_per_pod_high": 65.5,
        "slo_rate_rps": 100.0, "slo_rate_rps_low": 95.0, "slo_rate_rps_high": 104.0,
        "canary_rps_per_core": 300.0, "canary_rps_per_core_low": 290.0, "canary_rps_per_core_high": 310.0}
    # a night with no figure logs none (a missing figure is not a zero)
    empty = night(saturation={"rps": None, "users": None, "rps_ci": None}, rps_per_core=None, canary=None,
                  operating_point={"rps": None, "p95_ms": None}, slo_capacity={"users": None, "rps": None},
                  capacity={"per_pod": None})
    assert fields.metrics(empty) == {}


@pytest.mark.parametrize("pod, label", [
    ({"cpu": 0.5, "memory": 768 * 1024 ** 2, "concurrency": 4}, "cpu=500m memory=768Mi concurrency=4"),
    ({"cpu": None, "memory": None, "concurrency": 1}, "cpu=unlimited memory=unlimited concurrency=1"),
    ({"cpu": 2.0, "memory": 2 * GIB, "concurrency": 8}, "cpu=2 memory=2Gi concurrency=8"),
])
def test_the_pod_reads_as_manifests_write_it(pod, label) -> None:
    assert fields.pod_label(pod) == label
    summary = night(capacity={"per_pod": None}, platform=pod)  # no figure tonight: the pod the run deployed
    assert fields.version_tags(summary, CHECKED)["nightcap.pod"] == label


def test_the_config_becomes_flat_params_without_secrets() -> None:
    cfg = config(tracking_uri="http://nightcap:s3cret-pw@127.0.0.1:5000", headers={"X-Tenant": "tenant-secret"},
                 version="build signed with key-123")
    params = fields.params(cfg, redact=["key-123"])
    assert params["slo.p95_ms"] in ("500", "500.0") and params["stages"] == '["single_client"]'
    assert params["target.model_uri"] == "models:/wine/3" and params["publish.mlflow"] == "true"
    assert params["target.tracking_uri"] == "http://nightcap:***@127.0.0.1:5000"
    assert params["target.headers.X-Tenant"] == "***" and params["target.version"] == "build signed with ***"
    text = json.dumps(params)
    assert not any(s in text for s in ("s3cret-pw", "tenant-secret", "key-123"))
    assert "target.payload_file" not in params  # unset settings are left out, not logged as "None"
    assert all(re.fullmatch(r"[/\w.\- :]+", k) and len(k) <= 250 for k in params), params
    assert all(len(v) <= fields.MAX_PARAM_VALUE for v in params.values())
    assert fields.flat_params({"a": {"b c": "x" * 7000, "d!": [1, {"e": 2}], "f": {}}}) == {
        "a.b c": "x" * (fields.MAX_PARAM_VALUE - 1) + "…", "a.d_": '[1, {"e": 2}]'}


def test_the_run_tags_name_the_night_and_the_model() -> None:
    tags = fields.run_tags(night(), "models:/wine@champion", ModelVersionRef("wine", "3"))
    assert tags == {"nightcap.run_id": "20261204-020000-ab12cd", "nightcap.target": "wine",
                    "nightcap.status": "completed", "nightcap.verdict": "ok",
                    "nightcap.model_uri": "models:/wine@champion", "nightcap.config_hash": "c0ffee",
                    "mlflow.runName": "wine 20261204-020000-ab12cd",
                    "mlflow.note.content": "one pod of cpu=1 serves 60.25 rps",
                    "nightcap.model_name": "wine", "nightcap.model_version": "3"}
    assert fields.run_status(night()) == "FINISHED" and fields.run_status(night(status="failed")) == "FAILED"


@pytest.mark.parametrize("uri, publish, expected", [
    ("models:/wine/3", {}, True),
    ("models:/wine@champion", {}, True),
    ("runs:/0123abcd/model", {}, True),
    ("models:/wine/3", {"mlflow": False}, False),
    ("/srv/models/wine", {}, False),
    ("file:///srv/models/wine", {}, False),
])
def test_only_a_tracked_model_is_published_and_only_when_asked(uri, publish, expected) -> None:
    cfg = validate({"target": {"name": "wine", "kind": "mlflow", "model_uri": uri}, "slo": {"p95_ms": 500},
                    "publish": publish})
    assert fields.publishes(cfg) is expected
    assert fields.experiment_name(cfg) == "nightcap/wine"
    named = validate({"target": {"name": "wine", "kind": "mlflow", "model_uri": uri}, "slo": {"p95_ms": 500},
                      "publish": {"mlflow_experiment": "capacity/wine"}})
    assert fields.experiment_name(named) == "capacity/wine"
    assert not fields.publishes(validate({"target": {"name": "w", "kind": "reference"}, "slo": {"p95_ms": 500}}))


def test_every_summary_key_read_is_one_summary_json_has() -> None:
    """A renamed summary key must fail here, not leave a tag silently empty every night."""
    golden = set(json.loads((ROOT / "golden" / "summary_keys.json").read_text()))
    assert set(fields.READS) <= golden, sorted(set(fields.READS) - golden)


def test_the_http_bounds_hold_only_during_the_publication(monkeypatch) -> None:
    from nightcap.results.publish_mlflow import BOUNDS, bounded_http

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # MLflow's default: minutes against a dead server
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with bounded_http():
        assert {k: os.environ[k] for k in BOUNDS} == BOUNDS
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7" and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


# --- against a real tracking server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory):
    """One `mlflow server` for the module, with a model registered through it (version 1, alias `champion`)."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    from mlflow_server import mlflow_server

    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(root) as server:
        data = load_wine(as_frame=True)
        features = data.frame[data.feature_names].astype("float64")
        model = RandomForestClassifier(n_estimators=5, random_state=7).fit(features, data.target)
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                experiment = MlflowClient().create_experiment("training")
                with mlflow.start_run(experiment_id=experiment) as run:
                    mlflow.sklearn.log_model(model, name="model", input_example=features.head(2),
                                             registered_model_name=NAME,
                                             serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                                             pip_requirements=["scikit-learn", "cloudpickle"])
                MlflowClient().set_registered_model_alias(NAME, "champion", "1")
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None)
                if value is not None:
                    os.environ[key] = value
        yield {"url": server.url, "root": root, "run_id": run.info.run_id, "server": server}


def client_of(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def runs_of(client: Any, experiment: str, run_id: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], filter_string=f"tags.`nightcap.run_id` = '{run_id}'")


def report_folder(tmp_path: Path) -> Path:
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("# tonight\n")
    (out / "summary.json").write_text(json.dumps(night()))
    (out / "ramp.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (out / "steps.csv").write_text("stage\n")
    return out


@pytest.mark.slow
def test_a_night_on_a_registered_version_is_published(prefect_api, tracking_server, leftovers, tmp_path):
    from test_own_model import SHORT, assert_saturated, config_for, run_flow

    url = tracking_server["url"]
    started = datetime.now(timezone.utc)
    state, summary, report = run_flow(tmp_path, config_for(tmp_path, model_uri=f"models:/{NAME}/1", tracking_uri=url),
                                      SHORT)
    assert_saturated(state, summary)
    assert not [w for w in summary["warnings"] if "MLflow" in w], summary["warnings"]
    client = client_of(url)

    tags = client.get_model_version(NAME, "1").tags
    assert tags["nightcap.run_id"] == summary["run_id"]
    assert tags["nightcap.verdict"] == "inconclusive"  # no regression stage tonight: no verdict
    per_pod, op = summary["capacity"]["per_pod"], summary["operating_point"]
    assert per_pod is not None, summary["stages"]
    # a knee beyond the short search's 4 users leaves the headline inconclusive (machine speed decides): its figures
    # are then recorded nowhere, in the history as on the version (an older night's blanked)
    counts = not summary["saturation"]["inconclusive"]

    def shown(value: Any) -> str:
        return str(value) if counts and value is not None else ""

    assert tags["nightcap.rps_per_pod"] == shown(per_pod["rps"])
    assert re.fullmatch(r"cpu=1 memory=\S+ concurrency=1", tags["nightcap.pod"]), tags
    assert tags["nightcap.pod"] == fields.pod_label(per_pod["pod"])
    assert tags["nightcap.operating_rps"] == shown(op["rps"])
    assert tags["nightcap.p95_ms_at_operating"] == shown(op["p95_ms"])
    checked = datetime.fromisoformat(tags["nightcap.checked_at"])
    assert started - timedelta(seconds=5) <= checked <= datetime.now(timezone.utc)

    runs = runs_of(client, "nightcap/own-model", summary["run_id"])
    assert len(runs) == 1, runs
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["nightcap.model_name"] == NAME and run.data.tags["nightcap.model_version"] == "1"
    assert run.data.tags["nightcap.model_uri"] == f"models:/{NAME}/1"
    if counts:
        assert run.data.metrics["saturation_rps"] == summary["saturation"]["rps"]
        assert run.data.metrics["rps_per_pod"] == per_pod["rps"]
        if per_pod["ci"]:
            assert [run.data.metrics["rps_per_pod_low"], run.data.metrics["rps_per_pod_high"]] == per_pod["ci"]
    else:
        assert not {"saturation_rps", "rps_per_pod", "operating_rps"} & set(run.data.metrics), run.data.metrics
    assert run.data.tags["nightcap.status"] == "completed" and run.data.tags["nightcap.run_id"] == summary["run_id"]
    assert run.data.params["target.model_uri"] == f"models:/{NAME}/1"
    assert run.data.params["slo.p95_ms"] in ("500", "500.0")
    out = tmp_path / "out"
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs and logged == {"report.md", "summary.json"} | pngs, logged
    copy = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))
    assert json.loads(Path(copy).read_text())["run_id"] == summary["run_id"]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # nothing local made


@pytest.mark.slow
def test_a_stopped_server_is_a_warning_and_the_night_completes(prefect_api, tracking_server, leftovers, tmp_path,
                                                              monkeypatch):
    """The model is resolved and downloaded from a server that is gone when the night publishes."""
    from mlflow_server import mlflow_server
    from tasks import mlflow_publication
    from test_own_model import SHORT, config_for, run_flow

    publish, took = mlflow_publication.publish_night, {}
    with mlflow_server(tracking_server["root"]) as own:  # a second server on the same database, stopped below

        def stop_then_publish(*args: Any, **kwargs: Any) -> Any:
            own.stop()
            leftovers.fault("MLflow tracking server stopped before the publication")
            t0 = time.monotonic()
            try:
                return publish(*args, **kwargs)
            finally:
                took["s"] = time.monotonic() - t0

        monkeypatch.setattr(mlflow_publication, "publish_night", stop_then_publish)
        config = config_for(tmp_path, model_uri=f"models:/{NAME}@champion", tracking_uri=own.url)
        state, summary, report = run_flow(tmp_path, config, SHORT)
    assert state.is_completed(), state.message
    assert summary["status"] == "completed" and summary["saturation"]["rps"], summary["stages"]
    said = [w for w in summary["warnings"] if w.startswith("MLflow publication failed")]
    assert len(said) == 1 and own.url in said[0], summary["warnings"]
    assert "MLflow publication failed" in report and own.url in report.split("## Warnings")[-1]
    assert took["s"] < 30, took
    # nothing of tonight reached the registry (read through the module's server: the same database)
    client = client_of(tracking_server["url"])
    assert client.get_model_version(NAME, "1").tags.get("nightcap.run_id") != summary["run_id"]
    assert runs_of(client, "nightcap/own-model", summary["run_id"]) == []


@pytest.mark.slow
def test_an_alias_and_a_runs_uri_tag_the_version_they_name(tracking_server, tmp_path):
    from nightcap.results.publish_mlflow import publish_night
    from nightcap.targets.mlflow_model import ResolvedModel, resolve

    url, out = tracking_server["url"], report_folder(tmp_path)
    cfg = config(model_uri=f"models:/{NAME}@champion", tracking_uri=url)
    client = client_of(url)
    by_alias = resolve(f"models:/{NAME}@champion", url)
    done = publish_night(cfg, night(run_id="alias-night"), out, by_alias, now=CHECKED)
    assert done.warnings == [] and done.version == ModelVersionRef(NAME, "1"), done
    tags = client.get_model_version(NAME, "1").tags
    assert tags["nightcap.run_id"] == "alias-night" and tags["nightcap.checked_at"] == "2026-12-04T02:30:00+00:00"
    run = client.get_run(done.run_id)
    assert run.data.tags["nightcap.model_uri"] == f"models:/{NAME}@champion" and run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(done.run_id)} == {"report.md", "summary.json", "ramp.png"}
    assert client.get_experiment(run.info.experiment_id).name == "nightcap/wine"

    run_id = tracking_server["run_id"]
    by_run = ResolvedModel(f"runs:/{run_id}/model", artifact_uri=f"runs:/{run_id}/model", mlmodel={},
                           tracking_uri=url, registry_uri=url, run_id=run_id)
    done = publish_night(cfg, night(run_id="runs-night", status="failed", verdict="failed"), out, by_run)
    assert done.warnings == [] and done.version == ModelVersionRef(NAME, "1"), done
    assert client.get_model_version(NAME, "1").tags["nightcap.verdict"] == "inconclusive"
    assert client.get_run(done.run_id).info.status == "FAILED"  # the night failed, not the publication

    client.delete_experiment(client.create_experiment("nightcap-tests/deleted"))
    gone = config({"mlflow_experiment": "nightcap-tests/deleted"}, model_uri=f"models:/{NAME}/1", tracking_uri=url)
    done = publish_night(gone, night(run_id="deleted-night"), out, by_alias)
    assert len(done.warnings) == 1 and "is deleted" in done.warnings[0] and done.version is None, done
    assert client.get_model_version(NAME, "1").tags["nightcap.run_id"] == "runs-night"


@pytest.mark.slow
def test_a_dead_server_is_a_bounded_warning_never_an_exception(tmp_path, monkeypatch):
    from nightcap.results.publish_mlflow import publish_night
    from nightcap.targets.mlflow_model import ResolvedModel

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # the environment's would take minutes
    dead = f"http://nightcap:pw-1234@127.0.0.1:{free_port()}"
    model = ResolvedModel(f"models:/{NAME}/1", artifact_uri=f"models:/{NAME}/1", mlmodel={}, tracking_uri=dead,
                          registry_uri=dead, registered_model=NAME, version="1")
    t0 = time.monotonic()
    done = publish_night(config(tracking_uri=dead), night(), report_folder(tmp_path), model)
    assert time.monotonic() - t0 < 15
    assert len(done.warnings) == 1 and done.warnings[0].startswith("MLflow publication failed ("), done.warnings
    assert "on http://nightcap:***@127.0.0.1:" in done.warnings[0], done.warnings
    assert "pw-1234" not in done.warnings[0] and done.run_id is None and done.version is None
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"


def test_a_sqlite_stores_new_experiment_keeps_its_artifacts_beside_the_database(tmp_path) -> None:
    from nightcap.results.publish_mlflow import artifact_location

    assert artifact_location(f"sqlite:///{tmp_path}/mlflow.db", "nightcap/wine") == (
        tmp_path / "mlruns" / "nightcap-wine").as_uri()
    assert artifact_location("http://127.0.0.1:5000", "nightcap/wine") is None  # the server decides
    assert artifact_location("sqlite:///:memory:", "nightcap/wine") is None


@pytest.mark.slow
def test_a_night_on_a_sqlite_store_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """MLflow's default artifact root for a SQLite store is ./mlruns of the process: not where a night should write."""
    from nightcap.results.publish_mlflow import publish_night
    from nightcap.targets.mlflow_model import ResolvedModel

    store, elsewhere = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store}/mlflow.db"
    model = ResolvedModel("runs:/0123abcd/model", artifact_uri="runs:/0123abcd/model", mlmodel={}, tracking_uri=uri,
                          registry_uri=uri, run_id="0123abcd")
    done = publish_night(config(tracking_uri=uri), night(), report_folder(tmp_path), model)
    assert done.warnings == [] and done.run_id and done.version is None, done  # that run registered no version
    assert "no registered versions" in done.notes[0]
    assert sorted(p.name for p in (store / "mlruns" / "nightcap-wine").rglob("*") if p.is_file()) == [
        "ramp.png", "report.md", "summary.json"]
    assert list(elsewhere.iterdir()) == []
