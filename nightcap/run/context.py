"""The state of one capacity-check run, shared by the stages, and the run's one load generator.

Stages hand each other the tuned pod size and their typed results (`results`) through here; summary.json
is built from those results (`nightcap.results.summary`). Every measured step is
written to `steps.csv` and the history the moment it is measured, so a stage that fails (or a run that is
killed) keeps every step already measured.

Stage subflows take the context wrapped in a `StageRun`, which Prefect records as the run id and target only.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ConfigDict, PrivateAttr

from nightcap.analysis.pod_capacity import PodFigure, PodKey
from nightcap.config import Config
from nightcap.load.base import Generator, GeneratorError
from nightcap.load.factory import start_generator
from nightcap.load.runner import StepRunner
from nightcap.platforms.base import Platform, PodSpec
from nightcap.processes.registry import RunRegistry
from nightcap.results.stages import StageResults
from nightcap.steps import StepRow, write_steps_csv
from nightcap.targets.plan import TargetPlan

MID_RUN_RETRY_S = 2.0  # a step the history refuses mid-run is written again at the end (flows/capacity_check.finish)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class RunContext:
    config: Config
    run_id: str
    out: Path
    plan: TargetPlan
    registry: RunRegistry | None = None
    store: Any = None  # HistoryStore, or None when the history is off/unavailable
    platform: Platform | None = None
    spec: PodSpec | None = None
    api_key: str | None = field(default=None, repr=False)  # never in a repr (a log line, an error message)
    generator: Any = None  # the run's load generator in use, kept across searches (generator_for)
    spare_generators: dict[int, Any] = field(default_factory=dict)  # idle local generators by worker count
    pods: dict[PodKey, PodFigure] = field(default_factory=dict)  # capacity.per_pod: one figure per pod shape
    steps: list[StepRow] = field(default_factory=list)
    results: StageResults = field(default_factory=StageResults)
    info: dict[str, Any] = field(default_factory=dict)  # run_id, target, config_hash, deploy_s, status, error
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # per stage: status, duration_s, steps, error
    run_plots: list[str] = field(default_factory=list)  # drawn for the run as a whole (the trend over nights)
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    on_step: list[Callable[[StepRow], None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    answer_artifact: Any = None  # the Prefect artifact the answer is written into at the end (the run's first)
    _counter: int = 0

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.deadline = self.started + self.config.load.max_duration_s

    def stage_run(self) -> "StageRun":
        run = StageRun(run_id=self.run_id, target=self.config.target.name)
        run._context = self
        return run

    def generator_for(self, workers: int) -> Generator:
        """The run's generator with `workers` workers, idle: started on first use and kept for later searches.

        Starting Locust costs seconds locally and a pod rollout (and its deletion) in a cluster, and tuning
        alone runs a search per candidate. Pods are scaled to a new worker count. Local processes are kept
        by worker count (at most two generators: paired windows alternate between one and several
        generators without restarting either), the one not in use idle.
        """
        gen = self.generator
        if gen is not None and gen.workers == workers:
            return gen
        if gen is not None and hasattr(gen, "scale_workers"):
            try:
                gen.scale_workers(workers)
            except Exception as exc:
                self.release_generator()
                if isinstance(exc, GeneratorError):
                    raise
                raise GeneratorError(f"the load generator could not scale to {workers} worker(s): {exc}") from exc
            return gen
        wanted = self.spare_generators.pop(workers, None)
        if gen is not None:
            self.idle_generator()
            if self.generator is not None:  # still usable: park it for the next switch back
                for other in self.spare_generators.values():
                    other.stop()
                self.spare_generators = {gen.workers: gen}
                self.generator = None
        gen = wanted
        if gen is None:
            gen = start_generator(self.config, self.run_id, workers, self.plan.payloads, self.api_key,
                                  self.platform, self.registry, self.out / "logs")
        self.generator = gen
        return gen

    def idle_generator(self) -> None:
        """No users left running, so the next search starts from zero users; a generator that cannot is dropped."""
        gen = self.generator
        if gen is None:
            return
        try:
            gen.client.idle()
        except Exception as exc:
            logging.getLogger(__name__).info("the load generator did not stop its swarm (%s); it is replaced", exc)
            self.release_generator()

    def release_generator(self) -> None:
        """Stop the run's load generators (processes or pods) if any are running; idempotent."""
        gens = [self.generator, *self.spare_generators.values()]
        self.generator, self.spare_generators = None, {}
        for gen in gens:
            if gen is not None:
                gen.stop()

    @contextmanager
    def measuring(self, stage: str, workers: int, purpose: str = "search", platform: Platform | None = None,
                  spec: PodSpec | None = None) -> Iterator[StepRunner]:
        """A step runner on the run's generator with `workers` workers (on the run's platform and pod size unless
        given: the canary has its own); the generator is left idle after, or stopped when the measuring failed
        (it may be what failed: the next one starts fresh). Teardown stops it at the end of the run."""
        platform = platform or self.platform
        assert platform is not None
        gen = self.generator_for(workers)
        try:
            runner = StepRunner(self.config, platform, gen, stage, self.record_step, self.deadline,
                                spec or self.spec, self.next_step)
            runner.purpose = purpose
            if self.steps:  # a lighter first window waits for what the last one left queued at the server
                runner.follow(self.steps[-1])
            yield runner
        except BaseException:
            self.release_generator()
            raise
        self.idle_generator()

    def pod_key(self, replicas: int | None = None) -> PodKey:
        """The pod shape measured now (the tuned spec, else the platform's), on `replicas` pods."""
        spec, plat = self.spec, self.config.platform
        return PodKey(spec.cpu if spec else plat.cpu, spec.memory if spec else plat.memory,
                      spec.concurrency if spec else plat.concurrency,
                      replicas if replicas is not None else (self.platform.replicas if self.platform else plat.replicas))

    def next_step(self) -> int:
        self._counter += 1
        return self._counter

    def record_step(self, row: StepRow) -> None:
        """Persist at once: steps.csv is rewritten atomically and the history gets the row."""
        self.steps.append(row)
        write_steps_csv(self.out / "steps.csv", self.steps)
        if self.store is not None:
            try:
                self.store.add_step(self.run_id, row, retry_s=MID_RUN_RETRY_S)
            except Exception as exc:  # the history must never cost us a measurement: written again at the end
                logging.getLogger(__name__).warning("history: step %s not stored yet (written again at the end of "
                                                    "the run): %s", row.step, exc)
        for callback in self.on_step:
            callback(row)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def stage_status(self, name: str, status: str, **extra: Any) -> None:
        self.stages.setdefault(name, {}).update(status=status, **extra)

    def stage_steps(self, stage: str) -> list[StepRow]:
        return [s for s in self.steps if s.stage == stage]


class StageRun(BaseModel):
    """A stage subflow's one parameter: the run's context itself, which Prefect records as the run id and target.

    Prefect records subflow parameters with FastAPI's `jsonable_encoder` (prefect/flows.py `serialize_parameters`),
    which turns a dataclass into a dict of every field, the API key among them, and walks dataclass fields on every
    call (`visit_collection`). A model serializes and exposes its fields only; the context is a private attribute,
    and parameter validation hands the flow this same instance.
    """

    model_config = ConfigDict(frozen=True)
    run_id: str
    target: str
    _context: RunContext | None = PrivateAttr(default=None)

    @property
    def context(self) -> RunContext:
        assert self._context is not None, "a StageRun is made by RunContext.stage_run"
        return self._context
