"""The bundled model is what `make run` measures by default: it must build offline, be cached
safely, and really serve predictions through MLflow's scoring server (the command `mlflow models serve` runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from nightcap.targets.bundled_model import ensure_model, model_dir_for, sample_payloads, serve_command, serve_env
from nightcap.processes.ports import free_port


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_model(tmp_path_factory.mktemp("models"))


@pytest.mark.slow  # trains and saves the model (seconds)
def test_ensure_model_creates_mlflow_folder(model_dir: Path) -> None:
    assert (model_dir / "MLmodel").is_file()
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "sklearn" in mlmodel and "cloudpickle" in mlmodel
    assert model_dir.name.startswith("wine-")


@pytest.mark.slow  # trains and saves the model (seconds)
def test_ensure_model_is_idempotent(model_dir: Path) -> None:
    before = (model_dir / "MLmodel").stat().st_mtime_ns
    assert ensure_model(model_dir.parent) == model_dir
    assert (model_dir / "MLmodel").stat().st_mtime_ns == before
    assert [p.name for p in model_dir.parent.iterdir()] == [model_dir.name]  # no temp folders left


@pytest.mark.slow  # starts two processes that train the model
def test_ensure_model_survives_a_race(tmp_path: Path) -> None:
    """Two processes building the same cache: both succeed and one model remains."""
    code = "import sys; from nightcap.targets.bundled_model import ensure_model; print(ensure_model(sys.argv[1]))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {str(model_dir_for(tmp_path).resolve())}
    assert [p.name for p in tmp_path.iterdir()] == [model_dir_for(tmp_path).name]


def test_sample_payloads_are_single_rows_of_every_class() -> None:
    payloads = sample_payloads(6)
    assert len(payloads) == 6
    for body in payloads:
        split = body["dataframe_split"]
        assert len(split["columns"]) == 13 and len(split["data"]) == 1 and len(split["data"][0]) == 13
        assert all(isinstance(v, float) for v in split["data"][0])
    json.dumps(payloads)  # serialisable as request bodies
    assert len(sample_payloads(500)) == 500


@pytest.mark.slow  # trains and saves the model (seconds)
def test_serve_command_and_env(model_dir: Path) -> None:
    argv = serve_command(model_dir)
    assert argv[0] == str(Path(sys.executable).parent / "uvicorn") and argv[-1] == "mlflow.pyfunc.scoring_server.app:app"
    assert argv[argv.index("--port") + 1] == "{port}" and argv[argv.index("--workers") + 1] == "{concurrency}"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    env = serve_env(model_dir)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert str(model_dir.resolve()) in env["__pyfunc_model_path__"]  # where MLflow's app finds the model


@pytest.mark.slow
def test_mlflow_serves_predictions(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        serve_command(model_dir, port=port, concurrency=1),
        env=serve_env(model_dir),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while True:
                assert proc.poll() is None, f"mlflow exited early:\n{(tmp_path / 'serve.log').read_text()}"
                try:
                    if client.get("/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"no /ping in 90 s:\n{(tmp_path / 'serve.log').read_text()}"
                time.sleep(0.5)
            payloads = sample_payloads(3)
            classes = set()
            for body in payloads:
                response = client.post("/invocations", content=json.dumps(body), headers={"Content-Type": "application/json"})
                assert response.status_code == 200, response.text
                predictions = response.json()["predictions"]
                assert len(predictions) == 1
                classes.add(predictions[0])
            assert classes == {0, 1, 2}  # one row of each class, a trained model gets them right
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        log.close()
    assert not list(tmp_path.glob("mlruns")) and not list(tmp_path.glob("mlflow.db")), "serving touched tracking"
