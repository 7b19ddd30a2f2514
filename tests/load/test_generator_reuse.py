"""One load generator per run: kept idle between searches, resized or replaced when the worker count changes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nightcap.config import validate
from nightcap.run.context import RunContext
import nightcap.run.context as context_mod
import tasks.measure as measure


class FakeClient:
    def __init__(self, fail_stop: bool = False) -> None:
        self.stops = 0
        self.fail_stop = fail_stop

    def stop(self) -> None:
        if self.fail_stop:
            raise ConnectionError("master gone")
        self.stops += 1

    def idle(self) -> None:  # what the run calls between searches: counted as a stop of the swarm
        self.stop()


class LocalLike:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.client = FakeClient()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class PodLike(LocalLike):
    def scale_workers(self, n: int) -> None:
        self.workers = n


@pytest.fixture()
def ctx(tmp_path: Path) -> Any:
    config = validate({"target": {"name": "reuse", "kind": "reference"}, "slo": {"p95_ms": 500}})
    return RunContext(config=config, run_id="run-reuse", out=tmp_path, plan=SimpleNamespace(payloads=[]))  # type: ignore[arg-type]


def _factory(monkeypatch: pytest.MonkeyPatch, kind: type) -> list[Any]:
    started: list[Any] = []

    def start(_config: Any, _run_id: str, workers: int, *_args: Any) -> Any:
        started.append(kind(workers))
        return started[-1]
    monkeypatch.setattr(context_mod, "start_generator", start)
    return started


def test_local_generator_is_reused_and_replaced_when_the_worker_count_changes(ctx, monkeypatch) -> None:
    started = _factory(monkeypatch, LocalLike)
    first = ctx.generator_for(1)
    ctx.idle_generator()
    assert ctx.generator_for(1) is first and first.client.stops == 1 and len(started) == 1
    second = ctx.generator_for(3)  # local processes: a fresh master with 3 workers, the first kept idle
    assert not first.stopped and first.client.stops == 2 and second is not first and second.workers == 3
    assert ctx.generator is second and ctx.spare_generators == {1: first}
    assert ctx.generator_for(1) is first and len(started) == 2  # paired windows switch back without a restart
    third = ctx.generator_for(2)  # at most two generators: the one not wanted is stopped
    assert second.stopped and not first.stopped and ctx.spare_generators == {1: first} and third.workers == 2
    ctx.release_generator()
    assert first.stopped and third.stopped and ctx.generator is None and not ctx.spare_generators
    ctx.release_generator()  # idempotent


def test_pod_generator_is_scaled_not_recreated(ctx, monkeypatch) -> None:
    started = _factory(monkeypatch, PodLike)
    first = ctx.generator_for(1)
    assert ctx.generator_for(4) is first and first.workers == 4 and not first.stopped and len(started) == 1


def test_a_generator_that_cannot_stop_its_swarm_is_dropped(ctx, monkeypatch) -> None:
    _factory(monkeypatch, LocalLike)
    gen = ctx.generator_for(1)
    gen.client = FakeClient(fail_stop=True)
    ctx.idle_generator()
    assert gen.stopped and ctx.generator is None
    assert ctx.generator_for(1) is not gen


def test_a_failed_search_stops_the_generator(ctx, monkeypatch) -> None:
    _factory(monkeypatch, LocalLike)
    ctx.platform = SimpleNamespace()
    monkeypatch.setattr("nightcap.run.context.StepRunner", lambda *a, **k: SimpleNamespace())

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("the search blew up")
    monkeypatch.setattr(measure, "find_saturation", broken)
    with pytest.raises(RuntimeError, match="blew up"):
        measure.run_search(ctx, "single_client", 1, measure.search_params(ctx))
    assert ctx.generator is None


def test_measuring_runs_on_the_run_generator_and_leaves_it_idle_or_stops_it(ctx, monkeypatch) -> None:
    """One block for every stage (and the canary, on its own platform and pod size): idle after, stopped on error."""
    _factory(monkeypatch, LocalLike)
    ctx.platform, ctx.spec = SimpleNamespace(name="run"), SimpleNamespace(name="tuned")
    canary, canary_spec = SimpleNamespace(name="canary"), SimpleNamespace(name="canary pod")
    with ctx.measuring("canary", 1, platform=canary, spec=canary_spec) as runner:
        assert (runner.platform, runner.spec, runner.stage, runner.purpose) == (canary, canary_spec, "canary", "search")
        gen = runner.generator
    assert ctx.generator is gen and gen.client.stops == 1 and not gen.stopped  # idle, kept for the next stage
    with ctx.measuring("scaling", 1, purpose="pair") as runner:
        assert runner.generator is gen and runner.platform.name == "run" and runner.spec.name == "tuned"
        assert runner.purpose == "pair"
    with pytest.raises(KeyboardInterrupt), ctx.measuring("autoscale", 1):
        raise KeyboardInterrupt  # cancelled mid-window: nothing left running
    assert gen.stopped and ctx.generator is None
