"""The config's sections about the measurement (target, platform, load, search, slo, ...): one pydantic model
each, with its limits; the sections about the nights as a series (store, publish, retention, canary, regression)
are in `config_history.py`.

`nightcap.config` assembles them into `Config` (and re-exports them), reads YAML and applies `--set`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from nightcap.quantities import QuantityError, parse_cpu, parse_memory


def _cpu(value: Any) -> float:
    try:
        return parse_cpu(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


def _memory(value: Any) -> int:
    try:
        return parse_memory(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


Cores = Annotated[float, BeforeValidator(_cpu)]
MemoryBytes = Annotated[int, BeforeValidator(_memory)]
PositiveInt = Annotated[int, Field(gt=0, le=1_000_000)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]


class Strict(BaseModel):
    # inf and nan are never a sane setting (and inf passes a bare `gt=0`)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TargetConfig(Strict):
    """What is measured. `name` is the identity nightly runs are compared under."""

    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: Literal["reference", "mlflow", "command", "url"]
    url: str | None = None
    # reference target: each request holds one of `slots` for `service_ms` (+ `cpu_ms` of CPU work)
    slots: PositiveInt = 4
    service_ms: float = Field(20.0, ge=0, le=60_000)
    queue: int = Field(64, ge=0, le=100_000)
    cpu_ms: float = Field(0.0, ge=0, le=60_000)
    coherency_ms: float = Field(0.0, ge=0, le=1_000)
    memory_mb: int = Field(0, ge=0, le=65_536)
    # reference target stalls: every `stall_every_s` no response leaves for `stall_s` (0: never)
    stall_every_s: float = Field(0.0, ge=0, le=3600)
    stall_s: float = Field(0.0, ge=0, le=3600)
    # reference target: KiB hashed per request, a fixed amount of work (the platform canary's workload)
    work_kb: int = Field(0, ge=0, le=1_048_576)
    # mlflow target: a local folder, file://, runs:/, models:/name/version or models:/name@alias; empty means
    # the bundled wine classifier. runs:/ and models:/ are looked up in tracking_uri, else MLFLOW_TRACKING_URI.
    model_uri: str | None = Field(None, min_length=1, max_length=2000)
    tracking_uri: str | None = Field(None, min_length=1, max_length=2000)
    # command target: argv with {port} and {concurrency}
    command: list[str] | None = None
    image: str | None = None  # container image on Kubernetes
    version: str | None = None  # recorded with each run, not part of the comparison key
    path: str = "/invocations"
    ready_path: str = "/ping"
    method: Literal["GET", "POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key_secret_block: str | None = None
    payload_file: str | None = None
    payload_csv: str | None = None
    request_timeout_s: Seconds = 10.0
    startup_timeout_s: Seconds = 120.0
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])

    @field_validator("headers")
    @classmethod
    def _no_inline_secret(cls, headers: dict[str, str]) -> dict[str, str]:
        for key in headers:
            if key.lower() in {"authorization", "x-api-key", "api-key"}:
                raise ValueError(
                    f"header {key!r} must not be written in the config; set target.api_key_env to the "
                    "name of an environment variable that holds the key"
                )
        return headers

    @model_validator(mode="after")
    def _kind_needs(self) -> "TargetConfig":
        if self.kind == "url" and not self.url:
            raise ValueError("target.kind 'url' needs target.url, e.g. http://127.0.0.1:8080")
        if self.kind == "command" and not self.command:
            raise ValueError("target.kind 'command' needs target.command, a list with {port} in it")
        if self.url:
            parsed = urlparse(self.url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"target.url {self.url!r} must be an http(s) URL with a host")
            try:
                parsed.port
            except ValueError:
                raise ValueError(f"target.url {self.url!r} has a port outside 1-65535") from None
            if parsed.hostname not in self.allowed_hosts and "*" not in self.allowed_hosts:
                raise ValueError(
                    f"target.url host {parsed.hostname!r} is not in target.allowed_hosts "
                    f"{self.allowed_hosts}; add it there if you really mean to load it"
                )
        if self.model_uri and self.kind != "mlflow":
            raise ValueError(f"target.model_uri is for target.kind 'mlflow' (got kind {self.kind!r})")
        if self.tracking_uri and not self.model_uri:
            raise ValueError("target.tracking_uri is where target.model_uri is looked up; set target.model_uri too")
        if self.stall_s and not self.stall_s < self.stall_every_s:
            raise ValueError(f"target.stall_s ({self.stall_s:g}) must be shorter than target.stall_every_s "
                             f"({self.stall_every_s:g}); set stall_every_s to how often a stall starts")
        if not self.path.startswith("/") or not self.ready_path.startswith("/"):
            raise ValueError("target.path and target.ready_path must start with '/'")
        return self


class GkeConfig(Strict):
    project: str
    location: str
    cluster: str
    node_pool: str


DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
LabelMap = Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=20)]


class Toleration(Strict):
    """One pod toleration, as Kubernetes spells it (`toleration_seconds` for tolerationSeconds)."""

    key: str | None = Field(None, max_length=316)
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0, le=86_400)

    @model_validator(mode="after")
    def _shape(self) -> "Toleration":
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator 'Exists' takes no value; remove value, or use 'Equal'")
        if self.operator == "Equal" and not self.key:
            raise ValueError("a toleration with operator 'Equal' needs a key (or use operator 'Exists')")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("toleration_seconds applies only to effect 'NoExecute'")
        return self


class KubernetesConfig(Strict):
    """What a production namespace asks of every pod nightcap creates: placement, pulls, identity, liveness."""

    # on the model, Locust and canary pods: taints of the nodes they may use (preflight counts only such nodes)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=20)
    image_pull_secrets: list[DnsLabel] = Field(default_factory=list, max_length=10)
    # where the model pods run; empty: the GKE pool's label (platform.gke.node_pool), else anywhere
    model_node_selector: LabelMap = Field(default_factory=dict)
    # where the Locust pods run; they are always kept off the model's nodes (anti-affinity)
    generator_node_selector: LabelMap = Field(default_factory=dict)
    # the uid every container runs as (Pod Security "restricted" needs a non-root user); null: the image's USER,
    # which must then be numeric and not 0
    run_as_user: int | None = Field(1000, ge=1, le=2_147_483_647)
    # the namespace the runner pod (a Prefect Kubernetes job) runs in; null: platform.namespace
    runner_namespace: DnsLabel | None = None
    # a runner that has not renewed its lease in the cluster for this long is dead: the next run's start (or
    # `nightcap cleanup --namespace`) removes its objects and restores its node pool
    lease_s: float = Field(180.0, ge=30, le=3600)


class PlatformConfig(Strict):
    kind: Literal["local", "kubernetes"] = "local"
    replicas: int = Field(1, ge=1, le=1000)
    cpu: Cores | None = 1.0
    memory: MemoryBytes | None = None
    concurrency: int | None = Field(None, ge=1, le=10_000)  # None: the target's default (reference: slots)
    # local platform: cores the "cluster" can hand out; replicas beyond it stay Pending
    allocatable_cpu: Cores | None = None
    # local platform: replicas on some CPUs, the run's own processes (flow, Prefect server, proxy, Locust) on
    # the others, so neither steals the other's time slices (summary.json platform.cpu_pinning says what was done)
    pin_cpus: bool = True
    ready_timeout_s: Seconds = 120.0
    # kubernetes platform
    namespace: str = Field("nightcap", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    context: str | None = None
    port: int = Field(8080, ge=1, le=65535)
    in_cluster: bool = False
    gke: GkeConfig | None = None
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)


# On Kubernetes per-pod CPU comes from metrics-server, a rate over 15 s intervals (30 s on GKE): a window has
# to hold one whole interval for the figure to describe its own load. Used when load.window_s / warmup_s
# are not set and platform.kind is kubernetes.
KUBERNETES_WINDOW_S = 60.0
KUBERNETES_WARMUP_S = 10.0


class LoadConfig(Strict):
    workers: int = Field(2, ge=1, le=64)
    warmup_s: Seconds = 2.0  # kubernetes: KUBERNETES_WARMUP_S
    window_s: Seconds = 4.0  # kubernetes: KUBERNETES_WINDOW_S
    spawn_rate: float = Field(1000.0, gt=0, le=100_000)
    generator_bound_pct: float = Field(90.0, gt=0, le=100)
    reconnect_s: float = Field(5.0, ge=0, le=3600)
    locust_image: str = "locustio/locust:2.47.0"
    # Where the Locust master and workers run. `cluster`: pods next to the model (platform.kind kubernetes
    # only), sending to the Service's DNS name; `local`: processes on this machine, sending to the platform's
    # service_url (on Kubernetes outside the cluster, a port-forward: fine for checks, not for capacity).
    # Unset: `cluster` on kubernetes, `local` on the local platform.
    generator: Literal["cluster", "local"] | None = None
    # CPU cap per local generator process (cgroups): reproducible generator capacity, and a way to show
    # that generator-bound steps are flagged and never taken as the target's limit.
    worker_cpu: Cores | None = None
    # open loop (the operating-point check, autoscale phases): planned arrivals at a rate
    verify_s: float | None = Field(None, ge=0, le=3600)  # operating-point window; None: 3 x window_s, 0: no check
    verify_windows: int = Field(2, ge=1, le=10)  # windows per rate of the operating-point check (p95 over them all)
    # spacing of planned arrivals: poisson (independent callers, what production sends) or constant (kinder:
    # evenly spaced arrivals never bunch up, so they understate queueing)
    arrivals: Literal["constant", "poisson"] = "poisson"
    open_max_in_flight: int = Field(1000, ge=1, le=100_000)  # per worker; beyond it arrivals are dropped
    open_late_ms: float = Field(5.0, gt=0, le=10_000)  # an arrival sent this far behind its plan counts late
    # safety limits: a run that would exceed them is refused before it starts
    max_users: int = Field(512, ge=1, le=100_000)
    max_rps: float = Field(20_000.0, gt=0)
    max_duration_s: Seconds = 3600.0

    @property
    def verify_window_s(self) -> float:
        """The operating-point check's window: `verify_s`, by default three measured windows."""
        return 3 * self.window_s if self.verify_s is None else self.verify_s


class SearchConfig(Strict):
    start_users: int = Field(1, ge=1)
    max_users: int = Field(256, ge=1)
    min_gain: float = Field(0.05, ge=0, lt=1)
    # a level is measured until its goodput's 95% half-width is within this fraction (or max_windows) ...
    precision: float = Field(0.05, gt=0, lt=1)
    # ... and its last two windows agree within this fraction
    stable_within: float = Field(0.10, gt=0, lt=1)
    max_windows: int = Field(3, ge=1, le=10)
    refine_steps: int = Field(3, ge=0, le=10)
    headroom: float = Field(0.7, gt=0, le=1)
    slo_capacity: bool = True
    backoff_windows: int = Field(3, ge=0, le=10)  # open-loop bisection windows when the operating point misses the SLO
    # the knee the search chose is measured again on fresh windows, the reported figure: at least confirm_windows,
    # more until the interval between them is within `precision`, at most confirm_max_windows
    confirm_windows: int = Field(3, ge=2, le=20)
    confirm_max_windows: int = Field(6, ge=2, le=40)
    # ratios (N pods vs one, several generators vs one) from this many pairs of alternating windows
    pairs: int = Field(3, ge=2, le=20)
    # verify the last comparable night's knee (and tune's choice) before searching from scratch; not part of
    # the comparison key: a warm night is measured the same way, at fewer levels
    warm_start: bool = True

    @model_validator(mode="after")
    def _confirm_bounds(self) -> "SearchConfig":
        if self.confirm_max_windows < self.confirm_windows:
            raise ValueError(f"search.confirm_max_windows ({self.confirm_max_windows}) must be at least "
                             f"search.confirm_windows ({self.confirm_windows})")
        return self


class SloConfig(Strict):
    p95_ms: float = Field(gt=0, le=600_000)
    max_error_rate: float = Field(0.01, ge=0, le=1)


class TuneConfig(Strict):
    cpu: list[Cores] = Field(default_factory=lambda: [1.0], min_length=1, max_length=16)
    memory: list[MemoryBytes] = Field(default_factory=lambda: [parse_memory("512Mi")], min_length=1, max_length=16)
    concurrency: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default_factory=lambda: [1, 2, 4], min_length=1, max_length=16
    )
    replicas: int = Field(2, ge=1, le=16)


class ScalingConfig(Strict):
    max_replicas: int = Field(2, ge=1, le=1000)


class NodeType(Strict):
    """A node type pods are packed onto: what its kubelet lets pods use (allocatable), and its hourly price."""

    type: str = Field("custom", min_length=1, max_length=120)
    allocatable_cpu: Cores
    allocatable_memory: MemoryBytes | None = None  # None: only CPU decides how many pods fit
    price_per_hour: float | None = Field(None, ge=0)


class SizingConfig(Strict):
    users: list[Annotated[int, Field(gt=0, le=100_000_000)]] = Field(default_factory=list, max_length=100)
    rps: list[Annotated[float, Field(gt=0, le=1e9)]] = Field(default_factory=list, max_length=100)
    # the node type to price whole nodes on; without it, a node of node_allocatable_cpu priced per core
    node: NodeType | None = None
    node_allocatable_cpu: Cores = 2.0
    price_per_core_hour: float | None = Field(None, ge=0)
    headroom: float = Field(0.7, gt=0, le=1)
    think_time_s: float = Field(0.0, ge=0, le=3600)  # per user between requests; 0 = every user always in flight

    @property
    def node_type(self) -> NodeType:
        """`node`, or the older per-core settings as a CPU-only node (its price = cores x price per core)."""
        if self.node is not None:
            return self.node
        price = None if self.price_per_core_hour is None else self.price_per_core_hour * self.node_allocatable_cpu
        return NodeType(allocatable_cpu=self.node_allocatable_cpu, price_per_hour=price)


class AutoscalePhase(Strict):
    name: str
    load: float = Field(ge=0, le=100, description="offered rate, as a multiple of one replica's saturation rps")
    duration_s: Seconds


class AutoscaleConfig(Strict):
    target_cpu_pct: float = Field(80.0, gt=0, le=100)
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(12, ge=1, le=1000)
    overload: float = Field(3.0, gt=0, le=100)
    phases: list[AutoscalePhase] | None = None
    sample_s: Seconds = 2.0
    sync_period_s: Seconds = 15.0
    stabilization_s: float = Field(300.0, ge=0, le=86_400)
    tolerance: float = Field(0.1, ge=0, lt=1)
    readiness_delay_s: float = Field(30.0, ge=0, le=86_400)
    nodes: dict[str, int] | None = None  # {"min": 1, "max": 5} for GKE node-pool autoscaling
    # per-request: every arrival opens its own connection, so the Service spreads arrivals over the pods as it
    # would many independent callers'; keep-alive: one client's pool, where a backlogged pod keeps its share
    connections: Literal["per-request", "keep-alive"] = "per-request"

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscaleConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscale.min_replicas must not exceed autoscale.max_replicas")
        names = [p.name for p in self.phases or []]
        if len(set(names)) < len(names):
            raise ValueError(f"autoscale.phases: each phase needs its own name (got {names}): the timings find the "
                             "load step and the step down by name")
        return self
