"""Request bodies the target accepts, and where they came from (the report says which).

In order: `target.payload_csv`, `target.payload_file`, the bundled model's own rows, an MLflow model's saved
input example, synthetic rows built from its signature (column names and types; the report says the values
are synthetic), else a refusal naming the option to set. Pure: reads files, imports neither MLflow nor
Prefect, so every rule here is tested in milliseconds.
"""

from __future__ import annotations

import base64
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

MAX_BODIES = 1000
SYNTHETIC_ROWS = 16

# the body a url or command target gets when nothing says what it accepts; the smoke request catches a refusal
GENERIC_BODY = b'{"inputs": [[1.0, 2.0, 3.0]]}'

NO_PAYLOAD_HINT = ("set target.payload_file (a JSON or JSON-lines file of request bodies) or target.payload_csv "
                   "(CSV rows sent as MLflow dataframe_split)")


class PayloadError(ValueError):
    """No body can be built; the message names the option to set."""


@dataclass
class Payloads:
    bodies: list[bytes]
    source: str  # for the report: "target.payload_file x.json", "the model's input example", ...
    synthetic: bool = False  # values invented from the signature: the model may answer, but not as in production
    notes: list[str] = field(default_factory=list)

    @property
    def option(self) -> str:
        """The setting to name when the model refuses these bodies."""
        if self.source.startswith("target.payload_csv"):
            return "target.payload_csv"
        return "target.payload_file"


def csv_bodies(path: Path, limit: int = MAX_BODIES) -> list[bytes]:
    """Each CSV row becomes one MLflow-style `dataframe_split` request body."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        columns = next(reader)
        bodies = []
        for row in reader:
            values: list[object] = []
            for cell in row:
                try:
                    values.append(float(cell))
                except ValueError:
                    values.append(cell)
            bodies.append(json.dumps({"dataframe_split": {"columns": columns, "data": [values]}}).encode())
            if len(bodies) >= limit:
                break
    if not bodies:
        raise PayloadError(f"target.payload_csv {path} has a header but no rows")
    return bodies


def file_bodies(path: Path) -> list[bytes]:
    """A JSON file is one body; a .jsonl file is one body per line."""
    text = path.read_bytes()
    if path.suffix == ".jsonl":
        return [line for line in text.splitlines() if line.strip()]
    return [b" ".join(text.split(b"\n"))]


# --- an MLflow model's own example --------------------------------------------------------------------------


def example_bodies(model_dir: Path, info: dict[str, Any], limit: int = MAX_BODIES) -> list[bytes] | None:
    """Bodies from the input example saved with the model, one per example row; None when there is none.

    MLflow writes the exact /invocations body as `serving_input_example.json`; older models only have
    `input_example.json`, a dataframe in 'split' orient or an array, which is wrapped the same way.
    """
    serving = info.get("serving_input_path")
    if serving and (model_dir / serving).is_file():
        body = json.loads((model_dir / serving).read_text())
    elif info.get("artifact_path") and (model_dir / info["artifact_path"]).is_file():
        example = json.loads((model_dir / info["artifact_path"]).read_text())
        kind = info.get("type")
        if kind == "dataframe" and info.get("pandas_orient", "split") == "split" and isinstance(example, dict):
            body = {"dataframe_split": example}
        elif kind == "dataframe" and info.get("pandas_orient") == "records":
            body = {"dataframe_records": example}
        elif kind == "ndarray":
            body = example if isinstance(example, dict) and "inputs" in example else {"inputs": example}
        else:
            return None
    else:
        return None
    return [json.dumps(b).encode() for b in split_rows(body, limit)]


def split_rows(body: Any, limit: int = MAX_BODIES) -> list[Any]:
    """A multi-row dataframe body as one body per row (as payload_csv sends); anything else as it is."""
    if isinstance(body, dict) and isinstance(body.get("dataframe_split"), dict):
        split = body["dataframe_split"]
        data = split.get("data")
        if isinstance(data, list) and len(data) > 1:
            rest = {k: v for k, v in body.items() if k != "dataframe_split"}
            base = {k: v for k, v in split.items() if k not in ("data", "index")}
            return [{"dataframe_split": {**base, "data": [row]}, **rest} for row in data[:limit]]
    if isinstance(body, dict) and isinstance(body.get("dataframe_records"), list) and len(body["dataframe_records"]) > 1:
        rest = {k: v for k, v in body.items() if k != "dataframe_records"}
        return [{"dataframe_records": [row], **rest} for row in body["dataframe_records"][:limit]]
    return [body]


# --- synthetic rows from a signature ------------------------------------------------------------------------


def _value(spec: dict[str, Any], row: int, col: int) -> Any:
    """A plausible value of one MLflow column type, varied by row so caches do not flatter the model."""
    kind = spec.get("type")
    k = (row * 7 + col * 3) % 10
    if kind in ("double", "float"):
        return round(0.5 + k / 10, 2)
    if kind in ("long", "integer"):
        return k % 5 + 1
    if kind == "boolean":
        return k % 2 == 0
    if kind == "string":
        return f"text-{k % 5}"
    if kind == "binary":
        return base64.b64encode(f"nightcap-{k}".encode()).decode()
    if kind == "datetime":
        return f"2024-01-{k + 1:02d}T00:00:00"
    if kind == "array":
        return [_value(spec.get("items") or {"type": "double"}, row, col + i) for i in range(2)]
    if kind == "object":
        props = spec.get("properties") or {}
        return {name: _value(p, row, col + i) for i, (name, p) in enumerate(props.items())}
    if kind == "map":
        return {"key": _value(spec.get("values") or {"type": "string"}, row, col)}
    return f"text-{k % 5}"  # 'any' and types newer than this code: a string is the likeliest to pass


def _tensor(spec: dict[str, Any], row: int) -> Any:
    tensor = spec.get("tensor-spec") or {}
    dtype = str(tensor.get("dtype", "float64"))
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in (tensor.get("shape") or [1])]

    def fill(dims: Sequence[int], offset: int) -> Any:
        if not dims:
            k = (row * 7 + offset * 3) % 10
            if dtype.startswith(("int", "uint")):
                return k % 5 + 1
            if dtype == "bool":
                return k % 2 == 0
            if dtype in ("str", "object", "bytes"):
                return f"text-{k % 5}"
            return round(0.5 + k / 10, 2)
        return [fill(dims[1:], offset * dims[0] + i) for i in range(dims[0])]

    return fill(shape, 0)


def synthetic_bodies(inputs: list[dict[str, Any]], rows: int = SYNTHETIC_ROWS) -> list[bytes]:
    """One-row bodies built from a signature's input schema: dataframe_split for columns, inputs for tensors."""
    if not inputs:
        raise PayloadError("the model's signature has no inputs; " + NO_PAYLOAD_HINT)
    bodies = []
    if all(spec.get("type") == "tensor" for spec in inputs):
        named = [spec for spec in inputs if spec.get("name")]
        for row in range(rows):
            if len(inputs) == 1:
                body: dict[str, Any] = {"inputs": _tensor(inputs[0], row)}
            elif len(named) == len(inputs):
                body = {"inputs": {spec["name"]: _tensor(spec, row) for spec in inputs}}
            else:
                raise PayloadError("the model's signature has several unnamed tensors; " + NO_PAYLOAD_HINT)
            bodies.append(json.dumps(body).encode())
        return bodies
    names = [spec.get("name") for spec in inputs]
    for row in range(rows):
        data = [[_value(spec, row, col) for col, spec in enumerate(inputs)]]
        split: dict[str, Any] = {"columns": names, "data": data} if all(names) else {"data": data}
        bodies.append(json.dumps({"dataframe_split": split}).encode())
    return bodies


def describe_inputs(inputs: list[dict[str, Any]] | None, limit: int = 6) -> str:
    """`alcohol: double, ash: double, ... (13 columns)` for messages and the report."""
    if not inputs:
        return "no signature"
    parts = [f"{spec.get('name') or '#' + str(i)}: {spec.get('type') if spec.get('type') != 'tensor' else 'tensor'}"
             for i, spec in enumerate(inputs)]
    shown = ", ".join(parts[:limit]) + (", ..." if len(parts) > limit else "")
    return f"{shown} ({len(parts)} input{'s' if len(parts) != 1 else ''})"


def model_payloads(model_dir: Path, example_info: dict[str, Any] | None,
                   inputs: list[dict[str, Any]] | None) -> Payloads:
    """The model's input example, else synthetic rows from its signature, else PayloadError naming the option."""
    notes = []
    if example_info:
        try:
            bodies = example_bodies(model_dir, example_info)
        except (OSError, ValueError) as exc:
            bodies = None
            notes.append(f"the model's input example could not be read ({exc})")
        if bodies:
            return Payloads(bodies, "the model's input example", notes=notes)
    if inputs:
        return Payloads(synthetic_bodies(inputs), f"synthetic rows from the model's signature ({describe_inputs(inputs)})",
                        synthetic=True, notes=notes)
    raise PayloadError("the model was saved with neither an input example nor a signature, so nightcap cannot "
                       "tell what it accepts; " + NO_PAYLOAD_HINT)


def payload_plan_source(example_info: dict[str, Any] | None, inputs: list[dict[str, Any]] | None) -> str:
    """Which source `model_payloads` will use, from the MLmodel metadata alone (before the model is downloaded)."""
    if example_info:
        return "input example"
    if inputs:
        return "signature"
    raise PayloadError("the model was saved with neither an input example nor a signature, so nightcap cannot "
                       "tell what it accepts; " + NO_PAYLOAD_HINT)
