"""The platform canary decides whose change it is: a slower machine is not called a slower model."""

from __future__ import annotations

import ast
import random
import sys

import pytest

from nightcap.analysis.canary import CanarySettings, canary_figure, canary_value, normalise
from nightcap.analysis.regression import check_regression
from nightcap.analysis.regression_result import IMPROVED, OK, PLATFORM, REGRESSED
from nightcap.search.levels import Point
from source_ast import parse_source

SETTINGS = CanarySettings(work_kb=1024, cpu=0.5, slots=2, users=4)


def history(nights: int = 14, noise: float = 0.03, seed: int = 3, canary: float = 200.0,
            capacity: float = 300.0) -> list[dict]:
    """Earlier nights, newest first: the model's figures and the canary, each with its own noise."""
    rng = random.Random(seed)
    runs = []
    for i in range(nights):
        speed = 1 + rng.gauss(0, noise)  # the platform's own night-to-night wobble moves both
        model = capacity * speed * (1 + rng.gauss(0, noise))
        runs.append({"run_id": f"night-{i + 1}", "saturation_rps": model, "rps_per_core": model,
                     "p95_at_operating_ms": 40.0, "slo_users": 24, "canary_rps_per_core": canary * speed})
    return list(reversed(runs))


def tonight(canary: float | None, capacity: float) -> dict:
    return {"run_id": "tonight", "saturation_rps": capacity, "rps_per_core": capacity, "p95_at_operating_ms": 40.0,
            "slo_users": 24, "canary_rps_per_core": canary}


def check(night: dict, runs: list[dict]):
    return check_regression(night, runs)  # the defaults: what a nightly run uses


def test_canary_and_model_dropping_together_is_a_platform_change_not_a_model_regression() -> None:
    result = check(tonight(canary=160.0, capacity=240.0), history())
    assert not result.regressed
    assert result.verdict == PLATFORM and result.cause == "platform" and result.platform_moved
    assert result.platform.verdict == REGRESSED  # the canary itself got slower
    raw = {c.figure: c for c in result.figures}
    assert raw["saturation_rps"].verdict == PLATFORM and raw["rps_per_core"].verdict == PLATFORM
    norm = {c.figure: c for c in result.normalised}
    # normalised by the canary, tonight's capacity is what the baseline platform would have measured: ~300
    assert norm["saturation_rps_normalised"].tonight == pytest.approx(300.0, rel=0.05)
    assert norm["saturation_rps_normalised"].verdict == OK
    assert "the platform moved (slower)" in result.message and "the model held" in result.message


def test_only_the_model_dropping_is_a_model_regression() -> None:
    result = check(tonight(canary=200.0, capacity=240.0), history())
    assert result.regressed and result.verdict == REGRESSED
    assert result.cause == "model" and not result.platform_moved
    assert result.platform.verdict == OK
    assert "the platform canary held" in result.message and "the model moved" in result.message
    assert {c.figure for c in result.figures if c.verdict == REGRESSED} == {"saturation_rps", "rps_per_core"}


def test_a_model_drop_beyond_the_platforms_is_still_a_model_regression() -> None:
    result = check(tonight(canary=160.0, capacity=180.0), history())  # platform -20%, model -40%
    assert result.regressed and result.cause == "platform and model"
    assert "beyond the platform" in result.message


def test_a_faster_platform_does_not_hide_a_slower_model() -> None:
    result = check(tonight(canary=250.0, capacity=300.0), history())  # raw held, but on a machine 25% faster
    assert {c.figure: c.verdict for c in result.figures}["saturation_rps"] == OK
    assert result.regressed and result.cause == "platform and model"
    assert result.platform.verdict == IMPROVED


def test_without_a_canary_the_check_is_as_before_and_cannot_say_whose() -> None:
    result = check(tonight(canary=None, capacity=240.0), history())
    assert result.regressed and result.cause == "unknown" and result.platform is None and result.normalised == []
    before = check_regression({k: v for k, v in tonight(None, 240.0).items() if k != "canary_rps_per_core"},
                              history())
    assert before.verdict == result.verdict and before.message == result.message
    assert "platform" not in result.message


def test_noise_alone_neither_moves_the_platform_nor_the_model() -> None:
    alarms = 0
    for seed in range(30):
        runs = history(seed=seed)
        night = runs.pop(0)
        result = check({**night, "run_id": "tonight"}, runs)
        alarms += result.verdict != OK
    assert alarms <= 2, alarms


def test_the_verdict_is_strict_json_with_the_platform_block() -> None:
    data = check(tonight(canary=160.0, capacity=240.0), history()).to_dict()
    assert data["platform"]["figure"] == "canary_rps_per_core" and data["platform_moved"] is True
    assert data["cause"] == "platform" and len(data["normalised"]) == 2
    rows = check(tonight(canary=160.0, capacity=240.0), history()).table_rows()
    assert rows[-1]["figure"] == "canary_rps_per_core (platform)"
    assert rows[0]["normalised by canary"] == pytest.approx(300.0, rel=0.05)


def test_only_nights_with_the_same_canary_settings_compare() -> None:
    same = {"canary_rps_per_core": 210.0, "summary": {"canary": {"settings": SETTINGS.to_dict()}}}
    other = {"canary_rps_per_core": 90.0, "summary": {"canary": {"settings": {**SETTINGS.to_dict(), "cpu": 1.0}}}}
    older = {"summary": {"canary": {"settings": SETTINGS.to_dict(), "rps_per_core": 205.0}}}
    assert canary_value(same, SETTINGS) == 210.0
    assert canary_value(other, SETTINGS) is None
    assert canary_value(older, SETTINGS) == 205.0
    assert canary_value({"summary": {}}, SETTINGS) is None


def test_the_canary_figure_is_goodput_per_core_with_its_interval() -> None:
    windows = [Point(4, 100.0, 30.0, 0.0, rps_halfwidth=3.0, batches=10),
               Point(4, 104.0, 30.0, 0.0, rps_halfwidth=3.0, batches=10),
               Point(4, 0.0, None, 1.0, valid=False)]
    figure = canary_figure(windows, cores=0.5)
    assert figure.rps_per_core == pytest.approx(204.0, rel=0.01) and figure.windows == 2
    low, high = figure.ci
    assert low < figure.rps_per_core < high and high - low < 0.1 * figure.rps_per_core
    assert canary_figure([Point(4, 0.0, None, 1.0)], cores=0.5) is None
    assert normalise(240.0, 160.0, 200.0) == pytest.approx(300.0)
    assert normalise(240.0, None, 200.0) is None


def test_events_follow_the_cause_a_platform_change_alone_is_not_a_regressed_event() -> None:
    from nightcap.results.events import CAPACITY_REGRESSED, run_events

    def events_for(night: dict) -> list:
        block = check(night, history()).to_dict()
        summary = {"run_id": "tonight", "target": {"name": "ref", "kind": "reference"},
                   "stages": {"regression": {"status": "completed"}}, "regression": block}
        return run_events(summary, "completed", {"saturation_rps": night["saturation_rps"]})

    assert [e.event for e in events_for(tonight(canary=160.0, capacity=240.0))] == ["nightcap.run.completed"]
    both = events_for(tonight(canary=160.0, capacity=180.0))
    regressed = [e for e in both if e.event == CAPACITY_REGRESSED]
    assert len(regressed) == 1 and regressed[0].payload["cause"] == "platform and model"
    assert {f["figure"] for f in regressed[0].payload["figures"]} == {"saturation_rps_normalised",
                                                                      "rps_per_core_normalised"}
    model = [e for e in events_for(tonight(canary=200.0, capacity=240.0)) if e.event == CAPACITY_REGRESSED]
    assert model[0].payload["cause"] == "model"
    assert {f["figure"] for f in model[0].payload["figures"]} == {"saturation_rps", "rps_per_core"}


def test_the_canary_target_is_the_reference_server_doing_fixed_work_on_the_models_platform() -> None:
    from pathlib import Path

    from k8s_schemas import validate_strictly

    from nightcap.config import load_config
    from nightcap.kube import manifests as mf
    from nightcap.platforms.base import PodSpec
    from nightcap.targets.canary import SERVER, SERVER_MODULES, canary_config, canary_settings, canary_wanted
    from nightcap.targets.plan import plan_target

    root = Path(__file__).resolve().parents[2]
    # off for `make run`, on in the nightly deployment (deployments/prefect.yaml's override)
    assert canary_wanted(load_config(root / "configs" / "local.yaml")) == (False, "canary.enabled is false")
    local = load_config(root / "configs" / "local.yaml", ["canary.enabled=true"])
    assert canary_wanted(local) == (True, "")
    assert canary_wanted(load_config(root / "configs" / "reference.yaml"))[0] is False  # no regression stage
    cfg = canary_config(local)
    assert (cfg.target.kind, cfg.target.work_kb, cfg.target.service_ms) == ("reference", 2048, 0.0)
    assert (cfg.platform.kind, cfg.platform.replicas, cfg.platform.cpu, cfg.platform.concurrency) == ("local", 1, 0.5, 2)
    assert "--work-kb" in plan_target(cfg).command and canary_settings(local) == SETTINGS.__class__(2048, 0.5, 2, 4)
    # the comparison key of the model's nights does not depend on the canary or the warm start
    assert local.config_hash() == load_config(root / "configs" / "local.yaml",
                                              ["canary.work_kb=64", "search.warm_start=false"]).config_hash()

    gke = canary_config(load_config(root / "configs" / "gke.yaml"))
    assert (gke.target.kind, gke.target.image) == ("command", "python:3.12-slim")
    deployment = mf.model_deployment(gke, "nightly-1-canary", PodSpec(cpu=0.5, memory=256 * 2**20, concurrency=2), 1)
    validate_strictly(deployment, "1.33")
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"] and command[3:7] == ["--host", "0.0.0.0", "--port", str(gke.platform.port)]
    compile(command[2], "canary", "exec")  # the server's program, intact after {port} filling
    carried = dict(SERVER_MODULES, __main__=SERVER)
    assert all(repr(path.read_text()) in command[2] for path in carried.values())  # the sources, as they are
    for path in carried.values():  # the standard library only, and the modules the program carries
        for node in ast.walk(parse_source(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            assert all(n in carried or n.split(".")[0] in sys.stdlib_module_names for n in names), (path.name, names)


def test_a_platform_that_stays_slower_never_becomes_a_model_regression_on_the_nights_after() -> None:
    """The night the canary moved names the platform; the nights after restart every baseline there, so the
    raw figures (still lower) are not judged against the faster platform's nights."""
    rng = random.Random(8)
    runs: list[dict] = []
    causes = []
    for i in range(30):
        speed = (0.85 if i >= 15 else 1.0) * (1 + rng.gauss(0, 0.02))
        model = 300.0 * speed * (1 + rng.gauss(0, 0.03))
        night = {"run_id": f"night-{i + 1}", "saturation_rps": model, "rps_per_core": model,
                 "p95_at_operating_ms": 40.0, "slo_users": 24, "canary_rps_per_core": 200.0 * speed}
        result = check_regression(night, runs)
        assert not result.regressed, (i + 1, result.message)
        causes.append(result.cause)
        runs.insert(0, {**night, "summary": {"regression": result.to_dict()}})
    assert causes[15] == "platform" and "platform" not in causes[16:], causes
