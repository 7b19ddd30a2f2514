"""`nightcap init`'s config: commented, every stage, the payload source said, and valid as written
(model folders made of an MLmodel file written here; the real-model path is in test_own_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nightcap.config import ConfigError, load_config
from nightcap.targets.config_template import default_name, render
from nightcap.targets.mlflow_model import ModelUriError, resolve
from nightcap.targets.plan import check_target

SIGNATURE = {"inputs": json.dumps([{"type": "double", "name": "alcohol"}, {"type": "long", "name": "year"}])}


def model_folder(root: Path, name: str, **mlmodel: object) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": {}}, "model_uuid": "0123456789ab",
                                                    **mlmodel}))
    return folder


def written(tmp_path: Path, folder: Path, name: str = "mine") -> tuple[str, Path]:
    text = render(resolve(str(folder)), name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return text, path


def test_signature_only_model_config_says_synthetic_and_validates(tmp_path):
    folder = model_folder(tmp_path, "my model!", signature=SIGNATURE)
    model = resolve(str(folder))
    assert default_name(model) == "my-model" and model.label == "my model! 01234567"
    text, path = written(tmp_path, folder)
    assert "# payload: SYNTHETIC rows built from the model's signature (alcohol: double, year: long (2 inputs))" in text
    cfg = load_config(path)
    check_target(cfg)  # what `nightcap validate` and `nightcap run` check before starting anything
    assert cfg.target.model_uri == str(folder) and cfg.target.kind == "mlflow" and cfg.platform.kind == "local"
    assert list(cfg.stages) == ["tune", "single_client", "multi_client", "scaling", "sizing", "autoscale", "regression"]
    assert "EDIT" in text.split("slo:")[1].splitlines()[0]


def test_a_model_with_nothing_to_send_gets_a_config_that_names_the_option(tmp_path):
    folder = model_folder(tmp_path, "bare")
    text, path = written(tmp_path, folder)
    assert "# payload_file: payloads.jsonl" in text
    with pytest.raises(ConfigError, match="neither an input example nor a signature.*set target.payload_file"):
        check_target(load_config(path))
    (tmp_path / "rows.jsonl").write_text('{"inputs": [[1]]}\n')
    check_target(load_config(path, [f"target.payload_file={tmp_path / 'rows.jsonl'}"]))


def test_local_uris_that_name_nothing_say_what_was_tried(tmp_path):
    with pytest.raises(ModelUriError, match=r"no such folder \(tried: the local folder .*/nope\)"):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(ModelUriError, match="has no MLmodel file"):
        resolve(tmp_path.as_uri())
    folder = model_folder(tmp_path, "m", signature=SIGNATURE)
    assert resolve(folder.as_uri()).local_dir == folder.resolve()
    described = resolve(str(folder)).describe()
    assert described["signature"]["inputs"][1] == {"type": "long", "name": "year"}
    assert described["registered_model"] is None and described["version"] == "0123456789ab"


def test_the_registry_name_becomes_the_target_name():
    from nightcap.targets.mlflow_model import ResolvedModel

    model = ResolvedModel("models:/Fraud Model@prod", "models:/Fraud Model/4", {}, registered_model="Fraud Model",
                          version="4", alias="prod")
    assert default_name(model) == "Fraud-Model" and model.label == "Fraud Model v4 @prod"


def test_a_missing_payload_file_is_refused_before_anything_starts(tmp_path):
    from nightcap.config import validate

    cfg = validate({"target": {"name": "r", "kind": "reference", "payload_file": str(tmp_path / "nope.json")},
                    "slo": {"p95_ms": 100}})
    with pytest.raises(ConfigError, match=r"target.payload_file: no such file '.*nope.json'"):
        check_target(cfg)


def test_a_relative_folder_is_written_absolute(tmp_path, monkeypatch):
    model_folder(tmp_path, "rel", signature=SIGNATURE)
    monkeypatch.chdir(tmp_path)
    text = render(resolve("rel"), "rel")
    assert f'model_uri: "{(tmp_path / "rel").resolve()}"' in text  # the config works from any directory
