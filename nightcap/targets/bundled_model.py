"""The bundled real model: a wine classifier served by MLflow's scoring server (what ``mlflow models serve`` runs).

Why: `make run` must measure a real model server on a fresh machine with no downloads. The
model is trained on first use from scikit-learn's bundled wine data and cached as an MLflow
model folder (cloudpickle, so mlflow-skinny can load and serve it).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CACHE_ROOT", "ensure_model", "model_dir_for", "sample_payloads", "serve_command", "serve_env"]

#: Root of the model cache, relative to the working directory (the repo for `make run`).
#: ``NIGHTCAP_MODEL_CACHE`` overrides it.
DEFAULT_CACHE_ROOT = Path(".nightcap") / "models"

_SEED = 7


def model_dir_for(cache_dir: Path | None = None) -> Path:
    """Where the model for the installed scikit-learn lives: a new sklearn gets a fresh model,
    since pickles are not portable across sklearn versions."""
    import sklearn

    root = Path(cache_dir) if cache_dir is not None else Path(os.environ.get("NIGHTCAP_MODEL_CACHE", DEFAULT_CACHE_ROOT))
    return root / f"wine-{sklearn.__version__}"


def ensure_model(cache_dir: Path | None = None) -> Path:
    """Return the MLflow model folder, training and saving it on first use.

    ``cache_dir`` is the cache root; the model is ``<root>/wine-<sklearn version>``. Safe when two
    processes race: each saves into its own temporary folder beside the target and renames it into
    place; the loser discards its copy and uses the winner's.
    """
    model_dir = model_dir_for(cache_dir)
    if (model_dir / "MLmodel").is_file():
        return model_dir.resolve()
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    if model_dir.exists():  # a folder without MLmodel: a broken earlier save, not ours to trust
        shutil.rmtree(model_dir, ignore_errors=True)

    import cloudpickle
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_wine(as_frame=True)
    features = data.frame[data.feature_names].astype("float64")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=_SEED))
    model.fit(features, data.target)
    signature = infer_signature(features.head(5), model.predict(features.head(5)))

    # mlflow warns that pickles run code on load: true, and this pickle is one we just made
    sklearn_logger = logging.getLogger("mlflow.sklearn")
    previous_level = sklearn_logger.level
    sklearn_logger.setLevel(logging.ERROR)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.tmp-", dir=model_dir.parent))
    try:
        mlflow.sklearn.save_model(
            model,
            str(staging / "model"),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            signature=signature,
            # explicit requirements: inferring them spawns a slow subprocess, and serving uses the
            # local environment (--env-manager local) anyway
            pip_requirements=[
                f"mlflow-skinny=={mlflow.__version__}",
                f"scikit-learn=={sklearn.__version__}",
                f"cloudpickle=={cloudpickle.__version__}",
            ],
        )
        try:
            os.rename(staging / "model", model_dir)
        except OSError:
            if not (model_dir / "MLmodel").is_file():  # not a lost race: a real error
                raise
    finally:
        sklearn_logger.setLevel(previous_level)
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir.resolve()


def sample_payloads(n: int = 32) -> list[dict[str, Any]]:
    """``n`` request bodies for /invocations, one data-set row each, cycling through all classes.

    Values are floats so the JSON matches the model's double-typed signature.
    """
    from sklearn.datasets import load_wine

    data = load_wine()
    columns = list(data.feature_names)
    rows = data.data.tolist()
    # evenly spaced, centred rows: the data is sorted by class, so n >= 3 covers all three
    order = [((2 * i + 1) * len(rows)) // (2 * n) for i in range(n)]
    return [{"dataframe_split": {"columns": columns, "data": [[float(v) for v in rows[i]]]}} for i in order]


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def _scoring_server(model_dir: Path | str, port: int | str, concurrency: int | str) -> tuple[list[str], dict[str, str]]:
    """MLflow's own scoring-server command for the model (`mlflow.pyfunc.scoring_server.get_cmd`, what
    `mlflow models serve --env-manager local` runs) as argv, and the variables it adds to the environment."""
    from mlflow.pyfunc import scoring_server

    command, env = scoring_server.get_cmd(str(Path(model_dir).resolve()), port=port, host="127.0.0.1",
                                          nworkers=concurrency)
    argv = shlex.split(command)
    exe = _bin_dir() / argv[0]  # a bare `uvicorn`: the venv's, whatever PATH says
    if exe.exists():
        argv[0] = str(exe)
    return argv, {k: v for k, v in env.items() if os.environ.get(k) != v}


def serve_command(model_dir: Path | str, port: int | str = "{port}", concurrency: int | str = "{concurrency}") -> list[str]:
    """argv serving the model on 127.0.0.1: MLflow's scoring server under uvicorn, started directly.

    `mlflow models serve` runs exactly this command, as the child of a CLI process that first imports MLflow
    and then only waits: a second interpreter in the replica and about three more seconds per replica start
    (tune and scaling start replicas a dozen times a run). ``{port}`` and ``{concurrency}`` (uvicorn workers)
    stay as placeholders for the platform to fill unless given; the model's folder travels in the environment
    (:func:`serve_env`).
    """
    return _scoring_server(model_dir, port, concurrency)[0]


def serve_env(model_dir: Path | str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for :func:`serve_command`.

    Why: the scoring server finds the model through the variables MLflow's command sets; uvicorn's workers
    must come from the venv; and a capacity check must not depend on, or be slowed by, a tracking server or
    telemetry over the network.
    """
    env = dict(os.environ if base is None else base)
    env.update(_scoring_server(model_dir, "{port}", "{concurrency}")[1])
    env["PATH"] = os.pathsep.join([str(_bin_dir()), env.get("PATH", "")]).rstrip(os.pathsep)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # serving a local folder needs neither
        env.pop(name, None)
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    return env
