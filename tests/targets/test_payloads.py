"""Request bodies for one's own model without writing one: its input example, else synthetic rows from its
signature, else a refusal naming the option to set (millisecond tests on files written here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nightcap.targets.payloads import (
    NO_PAYLOAD_HINT,
    PayloadError,
    describe_inputs,
    example_bodies,
    model_payloads,
    payload_plan_source,
    split_rows,
    synthetic_bodies,
)

COLUMNS = [{"type": "double", "name": "alcohol", "required": True}, {"type": "long", "name": "magnesium"},
           {"type": "string", "name": "grade"}, {"type": "boolean", "name": "organic"},
           {"type": "array", "items": {"type": "double"}, "name": "spectrum"},
           {"type": "datetime", "name": "bottled"}, {"type": "binary", "name": "label"}]


def test_serving_example_rows_become_one_body_each(tmp_path: Path) -> None:
    split = {"columns": ["a", "b"], "data": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]}
    (tmp_path / "serving_input_example.json").write_text(json.dumps({"dataframe_split": split}))
    info = {"artifact_path": "input_example.json", "serving_input_path": "serving_input_example.json",
            "type": "dataframe", "pandas_orient": "split"}
    got = model_payloads(tmp_path, info, COLUMNS)
    assert got.source == "the model's input example" and not got.synthetic
    assert [json.loads(b) for b in got.bodies] == [
        {"dataframe_split": {"columns": ["a", "b"], "data": [row]}} for row in split["data"]]


def test_an_older_model_with_only_input_example_json_is_wrapped_as_dataframe_split(tmp_path: Path) -> None:
    (tmp_path / "input_example.json").write_text(json.dumps({"columns": ["a"], "data": [[1.5]]}))
    bodies = example_bodies(tmp_path, {"artifact_path": "input_example.json", "type": "dataframe"})
    assert bodies is not None and json.loads(bodies[0]) == {"dataframe_split": {"columns": ["a"], "data": [[1.5]]}}
    (tmp_path / "input_example.json").write_text(json.dumps([[1, 2], [3, 4]]))
    bodies = example_bodies(tmp_path, {"artifact_path": "input_example.json", "type": "ndarray"})
    assert bodies is not None and json.loads(bodies[0]) == {"inputs": [[1, 2], [3, 4]]}


def test_split_rows_keeps_params_and_leaves_tensors_whole() -> None:
    body = {"dataframe_split": {"columns": ["a"], "index": [0, 1], "data": [[1], [2]]}, "params": {"k": 1}}
    assert split_rows(body) == [{"dataframe_split": {"columns": ["a"], "data": [[1]]}, "params": {"k": 1}},
                                {"dataframe_split": {"columns": ["a"], "data": [[2]]}, "params": {"k": 1}}]
    assert split_rows({"dataframe_records": [{"a": 1}, {"a": 2}]}) == [{"dataframe_records": [{"a": 1}]},
                                                                       {"dataframe_records": [{"a": 2}]}]
    assert split_rows({"inputs": [[1, 2], [3, 4]]}) == [{"inputs": [[1, 2], [3, 4]]}]


def test_signature_only_gives_synthetic_typed_rows_and_says_so(tmp_path: Path) -> None:
    got = model_payloads(tmp_path, None, COLUMNS)
    assert got.synthetic and got.source.startswith("synthetic rows from the model's signature")
    assert "alcohol: double" in got.source
    bodies = [json.loads(b) for b in got.bodies]
    assert len(bodies) == 16 and len({json.dumps(b) for b in bodies}) > 5  # varied, not one cached row
    split = bodies[0]["dataframe_split"]
    assert split["columns"] == [c["name"] for c in COLUMNS]
    alcohol, magnesium, grade, organic, spectrum, bottled, label = split["data"][0]
    assert isinstance(alcohol, float) and isinstance(magnesium, int) and not isinstance(magnesium, bool)
    assert isinstance(grade, str) and isinstance(organic, bool) and isinstance(spectrum, list)
    assert bottled.startswith("2024-01-") and isinstance(label, str)


def test_a_missing_example_file_falls_back_to_the_signature(tmp_path: Path) -> None:
    info = {"artifact_path": "input_example.json", "serving_input_path": "serving_input_example.json"}
    got = model_payloads(tmp_path, info, COLUMNS[:1])
    assert got.synthetic


def test_tensor_signatures_send_inputs() -> None:
    one = synthetic_bodies([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2, 3]}}], rows=1)
    assert json.loads(one[0])["inputs"] == [[[0.5, 0.8, 1.1], [1.4, 0.7, 1.0]]]
    named = synthetic_bodies([{"type": "tensor", "name": "x", "tensor-spec": {"dtype": "int64", "shape": [-1, 2]}},
                              {"type": "tensor", "name": "y", "tensor-spec": {"dtype": "bool", "shape": [-1]}}], rows=1)
    inputs = json.loads(named[0])["inputs"]
    assert set(inputs) == {"x", "y"} and all(isinstance(v, int) for v in inputs["x"][0])


def test_unnamed_columns_send_positional_data() -> None:
    body = json.loads(synthetic_bodies([{"type": "double"}, {"type": "double"}], rows=1)[0])
    assert body == {"dataframe_split": {"data": [[0.5, 0.8]]}}


def test_neither_example_nor_signature_names_the_options(tmp_path: Path) -> None:
    with pytest.raises(PayloadError, match="target.payload_file") as caught:
        model_payloads(tmp_path, None, None)
    assert "target.payload_csv" in str(caught.value) and NO_PAYLOAD_HINT in str(caught.value)
    with pytest.raises(PayloadError, match="target.payload_file"):
        payload_plan_source(None, [])
    assert payload_plan_source({"artifact_path": "x"}, None) == "input example"
    assert payload_plan_source(None, COLUMNS) == "signature"


def test_describe_inputs_is_short() -> None:
    assert describe_inputs(COLUMNS) == ("alcohol: double, magnesium: long, grade: string, organic: boolean, "
                                        "spectrum: array, bottled: datetime, ... (7 inputs)")
    assert describe_inputs(None) == "no signature"
