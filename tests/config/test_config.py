"""Bad, hostile and random configs: one ConfigError listing every problem (exit 2), never a traceback,
and nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nightcap.cli import app
from nightcap.config import Config, ConfigError, load_config, parse_yaml, validate
from nightcap.quantities import QuantityError, parse_cpu, parse_memory

NIGHTCAP = str(Path(sys.executable).with_name("nightcap"))

GOOD = {
    "target": {"name": "reference", "kind": "reference", "slots": 4, "service_ms": 20},
    "platform": {"kind": "local", "replicas": 1, "cpu": 1, "memory": "256Mi"},
    "slo": {"p95_ms": 500},
    "stages": ["single_client"],
}


def write(tmp_path: Path, data, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def bad_config() -> dict:
    return {
        "target": {"name": "reference", "kind": "reference", "nmae": "typo"},
        "platform": {"replicas": -1, "memory": "12XB"},
        "stages": ["single_client"],
    }


def test_every_problem_is_listed_once_with_its_yaml_path(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, bad_config()))
    problems = caught.value.problems
    text = "\n".join(problems)
    assert len(problems) == 4, problems
    assert "target.nmae: unknown key" in text
    assert "platform.replicas:" in text and "greater than or equal to 1" in text
    assert "platform.memory:" in text and "'12XB' has unknown unit 'XB'" in text
    assert "slo: required, but missing" in text
    assert "4 problem(s), nothing was started" in caught.value.render()


@pytest.mark.slow  # starts `nightcap run`
def test_run_on_a_bad_config_exits_2_and_starts_nothing(tmp_path):
    config = write(tmp_path, bad_config())
    token = "config-test-" + os.urandom(4).hex()
    proc = subprocess.Popen([NIGHTCAP, "run", str(config)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "NIGHTCAP_TEST_TOKEN": token})
    parent = psutil.Process(proc.pid)
    children: set[int] = set()
    while proc.poll() is None:  # watch for any child while it runs
        try:
            children |= {c.pid for c in parent.children(recursive=True)}
        except psutil.Error:
            pass
        time.sleep(0.01)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "target.nmae: unknown key" in err and "platform.memory" in err and "slo: required" in err
    assert "Traceback" not in err + out
    assert not children, "nothing may be started for a bad config"
    for p in psutil.process_iter():  # nor anything that outlived it
        try:
            assert p.environ().get("NIGHTCAP_TEST_TOKEN") != token, p.cmdline()
        except psutil.Error:
            pass
    assert not (tmp_path / ".nightcap").exists() and not (tmp_path / ".prefect").exists()
    assert not (tmp_path / "reports").exists()


def bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\ntarget: {name: x, kind: reference}\nslo: {p95_ms: 1}\n"


HOSTILE = {
    "huge numbers": ({**GOOD, "platform": {"replicas": 10**30, "memory": "9999999Ei", "cpu": 1e300},
                      "load": {"window_s": 1e308, "max_users": 10**12}, "slo": {"p95_ms": float("inf")}},
                     ["platform.replicas", "platform.memory", "platform.cpu", "load.window_s", "load.max_users",
                      "slo.p95_ms"]),
    "a 401-digit number": ({**GOOD, "sizing": {"users": [10**400]}}, ["sizing.users[0]", "characters)"]),
    "a 5000-digit number": ("target: {name: x, kind: reference, slots: 1" + "0" * 5000 + "}\nslo: {p95_ms: 1}",
                            ["a value cannot be read"]),
    "a host not in allowed_hosts": ({**GOOD, "target": {"name": "x", "kind": "url",
                                                        "url": "http://example.com:8080/invocations"}},
                                    ["'example.com' is not in target.allowed_hosts"]),
    "a YAML bomb": (bomb(), ["aliases (*name) are not allowed"]),
    "a 2 MB file": ("# " + "x" * 2_000_000 + "\n" + yaml.safe_dump(GOOD), ["configs are limited to 1000000"]),
    "a list at the top level": ("- target\n- slo\n", ["the top level must be a mapping"]),
    "a scalar at the top level": ("just a string\n", ["the top level must be a mapping"]),
    "deep nesting": ("a: " + "[" * 5000 + "]" * 5000, ["nested too deeply"]),
    "a python tag": ("!!python/object/apply:os.system ['touch pwned']\n", ["not valid YAML"]),
    "a port out of range": ({**GOOD, "target": {"name": "x", "kind": "url", "url": "http://127.0.0.1:99999/"}},
                            ["port outside 1-65535"]),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_config_exits_2_with_a_clear_message(name, tmp_path, monkeypatch):
    data, expected = HOSTILE[name]
    config = write(tmp_path, data)
    monkeypatch.chdir(tmp_path)
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    output = " ".join(result.output.split())
    for text in expected:
        assert text in output, output[:2000]
    assert "nothing was started" in output
    assert {c.pid for c in psutil.Process().children(recursive=True)} <= before
    assert not (tmp_path / ".nightcap").exists() and not (tmp_path / "pwned").exists()


def test_set_overrides_are_parsed_as_yaml(tmp_path):
    config = write(tmp_path, GOOD)
    cfg = load_config(config, ['stages=["tune"]', "slo.p95_ms=100", "load.window_s=1.5", "search.max_users=8"])
    assert cfg.stages == ["tune"] and cfg.slo.p95_ms == 100 and cfg.load.window_s == 1.5
    assert cfg.search.max_users == 8
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(config, ["slo.p95_ms"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(config, ["slo.p95_ms.x=1"])
    with pytest.raises(ConfigError) as caught:
        load_config(config, ["stages=[nope]", "slo.p95_ms=-1"])
    assert len(caught.value.problems) == 2


def test_validate_command_shows_the_override(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(write(tmp_path, GOOD)), "--set", 'stages=["tune"]',
                                      "--set", "slo.p95_ms=100"])
    assert result.exit_code == 0, result.output
    assert '"p95_ms": 100' in result.output and '"tune"' in result.output


# --- property tests ----------------------------------------------------------------------------

quantity_text = st.one_of(
    st.text(max_size=20),
    st.builds(lambda n, unit: f"{n}{unit}", st.floats(allow_nan=True, allow_infinity=True) | st.integers(),
              st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "XB", "e5", "E99"])),
    st.from_regex(r"\A[0-9]{0,30}(\.[0-9]{0,10})?([eE][+-]?[0-9]{1,3})?[A-Za-z]{0,3}\Z"),
)
quantity_any = st.one_of(quantity_text, st.integers(), st.floats(), st.booleans(), st.none())


@settings(max_examples=400, deadline=None)
@given(quantity_any)
def test_quantities_give_a_value_or_a_quantity_error(value):
    for parse in (parse_memory, parse_cpu):
        try:
            result = parse(value)
        except QuantityError as exc:
            assert str(exc)
        else:
            assert result > 0 and result == result


@pytest.mark.parametrize("text,memory", [("500M", 500_000_000), ("1.5Gi", 1.5 * 2**30), ("256Mi", 256 * 2**20),
                                         ("1e9", 10**9), (1024, 1024)])
def test_known_memory_quantities(text, memory):
    assert parse_memory(text) == int(memory)


@pytest.mark.parametrize("text,cores", [("500m", 0.5), ("0.5", 0.5), ("2", 2.0), (1, 1.0), ("1500m", 1.5)])
def test_known_cpu_quantities(text, cores):
    assert parse_cpu(text) == cores


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    quantity_text)
keys = st.one_of(st.sampled_from(["target", "platform", "load", "search", "slo", "stages", "tune", "scaling",
                                  "sizing", "autoscale", "store", "regression", "name", "kind", "url", "replicas",
                                  "cpu", "memory", "p95_ms", "users", "phases", "headers", "allowed_hosts"]),
                 st.text(max_size=8), st.integers())
trees = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(keys, children, max_size=5), max_leaves=25)
configs = st.fixed_dictionaries({"target": st.one_of(trees, st.fixed_dictionaries(
    {"name": st.text(max_size=10), "kind": st.sampled_from(["reference", "url", "mlflow", "command", "x"])},
    optional={"url": st.text(max_size=30), "slots": scalars, "allowed_hosts": trees})),
    "slo": st.one_of(trees, st.fixed_dictionaries({"p95_ms": scalars}))},
    optional={"platform": st.dictionaries(st.sampled_from(["replicas", "cpu", "memory", "kind", "x"]), scalars),
              "stages": trees, "load": trees, "sizing": trees, "autoscale": trees})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(trees, configs))
def test_any_data_gives_a_config_or_a_config_error(data):
    try:
        assert isinstance(validate(data), Config)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), trees.map(lambda t: yaml.safe_dump(t, default_flow_style=True)),
                 configs.map(yaml.safe_dump)))
def test_any_yaml_text_gives_a_config_or_a_config_error(text):
    try:
        data = parse_yaml(text)
        assert isinstance(validate(data if data is not None else {}), Config)
    except ConfigError as exc:
        assert exc.problems


def test_kubernetes_windows_default_to_what_metrics_server_can_resolve() -> None:
    from nightcap.config import KUBERNETES_WARMUP_S, KUBERNETES_WINDOW_S

    base = {"target": {"name": "t", "kind": "reference", "image": "x"}, "slo": {"p95_ms": 500}}
    k8s = validate({**base, "platform": {"kind": "kubernetes"}})
    assert (k8s.load.window_s, k8s.load.warmup_s) == (KUBERNETES_WINDOW_S, KUBERNETES_WARMUP_S) == (60.0, 10.0)
    assert validate({**base, "platform": {"kind": "kubernetes"}, "load": {"window_s": 3}}).load.window_s == 3
    assert validate({**base, "platform": {"kind": "kubernetes"}, "load": {"window_s": 3}}).load.warmup_s == 10
    local = validate(base)
    assert (local.load.window_s, local.load.warmup_s) == (4.0, 2.0)  # local configs (and their hashes) unchanged


def test_reference_stall_is_passed_to_the_server_and_checked():
    from nightcap.targets.plan import plan_target

    cfg = validate({**GOOD, "target": {**GOOD["target"], "stall_every_s": 2, "stall_s": 0.5}})
    argv = plan_target(cfg).command
    assert argv[argv.index("--stall-every-s") + 1] == "2.0" and argv[argv.index("--stall-s") + 1] == "0.5"
    with pytest.raises(ConfigError, match="target.stall_s .* shorter than target.stall_every_s"):
        validate({**GOOD, "target": {**GOOD["target"], "stall_s": 0.5}})


def test_a_model_uri_on_kubernetes_needs_the_image_that_serves_it(tmp_path) -> None:
    """A model resolved on this machine cannot be served from a cluster pod: the error names target.model_uri and
    says what to set; with target.image the URI gives the payload and the version, and the image is recorded too."""
    import json

    from nightcap.targets.plan import plan_target

    model = tmp_path / "wine"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {python_function: {}}\nmodel_uuid: abc123\n"
                                   "saved_input_example_info: {serving_input_path: serving_input_example.json}\n")
    (model / "serving_input_example.json").write_text(json.dumps({"dataframe_split": {"columns": ["a"],
                                                                                       "data": [[1.0]]}}))
    base = {"target": {"name": "t", "kind": "mlflow", "model_uri": str(model)}, "slo": {"p95_ms": 500},
            "platform": {"kind": "kubernetes"}}
    with pytest.raises(ConfigError) as err:
        validate(base)
    (problem,) = err.value.problems
    assert f"target.model_uri {str(model)!r} cannot be served from a cluster pod" in problem
    assert f"mlflow models build-docker -m {model} -n IMAGE" in problem and "set target.image" in problem
    image = "europe-west4-docker.pkg.dev/p/models/wine:1"
    plan = plan_target(validate({**base, "target": {**base["target"], "image": image}}))
    assert plan.version["image"] == image and plan.version["model_uri"] == str(model)
    assert json.loads(plan.payloads[0]) == {"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}
    assert "image" not in plan_target(validate({**base, "platform": {"kind": "local"}})).version
