"""The night's figures where people already look: `nightcap metrics` (OpenMetrics text of the latest night of every
target, read from a real history on SQLite and on PostgreSQL), the push to a Pushgateway at the end of a real run
(a recording HTTP server on loopback stands in for it), and the Prometheus rules and Grafana dashboard, which may
name only metrics nightcap emits."""

from __future__ import annotations

import base64
import http.server
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as classic_text_families
from typer.testing import CliRunner

from nightcap.cli import app
from nightcap.config import ConfigError, validate
from nightcap.results.history_schema import runs
from nightcap.results.metrics_samples import METRIC_NAMES, METRICS, night_samples, pod_label, tonight
from nightcap.results.openmetrics import PushFailed, exposition, push
from nightcap.results.redact import config_dump
from nightcap.results.store import HistoryStore

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_V1 = Path(__file__).parents[1] / "fixtures" / "history-v1.db"
ALERTS = ROOT / "deployments" / "prometheus" / "nightcap-alerts.yaml"
DASHBOARD = ROOT / "deployments" / "grafana" / "nightcap-dashboard.json"
GiB = 2**30


# -- a history of two targets over several nights ----------------------------------------------------------------


def night_summary(rps: float, half: float, *, status: str = "completed", rate: float | None = None,
                  p95_ms: float = 80.0, sizing: dict[str, int] | None = None, regression: str | None = None,
                  verdict: str | None = None, cpu: float = 1.0, concurrency: int = 2) -> dict[str, Any]:
    """A summary.json as a run writes it (the keys `nightcap metrics` reads; docs/contracts.md)."""
    op_rate = round(0.7 * rps, 2)
    rate = op_rate if rate is None else rate
    pod = {"cpu": cpu, "memory": GiB, "concurrency": concurrency}
    summary: dict[str, Any] = {
        "status": status, "verdict": verdict or status,
        "saturation": {"rps": rps, "users": 8, "rps_ci": [rps - half, rps + half], "replicas": 1, "inconclusive": None},
        "operating_point": {"rps": op_rate, "load": "open", "p95_ms": p95_ms, "meets_slo": rate == op_rate,
                            "verification": [{"rate_rps": op_rate, "p95_ms": p95_ms,
                                              "meets_slo": rate == op_rate}]},
        "slo_capacity": {"users": 12, "rps": rps, "rate_rps": rate, "rate_rps_interval": [rate, None]},
        "capacity": {"per_pod": {"pod": pod, "replicas": 1, "rps": rps, "ci": [rps - half, rps + half],
                                 "status": "confirmed"}, "pods": []},
        "platform": {"kind": "local", "replicas": 1, **pod},
        "stages": {"single_client": {"status": "completed"}},
    }
    if sizing:
        summary["sizing"] = {"rows": [{"target": t, "pods": n, "target_kind": t.split()[1]} for t, n in sizing.items()]}
    if regression:
        summary["regression"] = {"verdict": regression, "message": f"{regression} (test)"}
    return summary


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    return {"saturation_rps": summary["saturation"]["rps"], "operating_rps": summary["operating_point"]["rps"],
            "p95_at_operating_ms": summary["operating_point"]["p95_ms"]}


def at(day: int, hour: int = 2) -> datetime:
    return datetime(2026, 3, day, hour, 0)


def write_night(store: HistoryStore, run_id: str, target: str, status: str, day: int,
                summary: dict[str, Any] | None = None) -> None:
    """Through the store's own writing path, then dated to its night (naive UTC, as the store keeps it)."""
    cfg = validate({"target": {"name": target, "kind": "reference"}, "slo": {"p95_ms": 500},
                    "platform": {"kind": "local", "cpu": 1.0, "memory": "1Gi", "concurrency": 2}})
    store.start_run(run_id, cfg, {"service_ms": 20})
    if status != "running":
        store.finish_run(run_id, status, figures(summary) if summary else {}, summary or {"status": status})
    ended = None if status == "running" else at(day) + timedelta(minutes=25)
    store.transaction(lambda conn: conn.execute(runs.update().where(runs.c.run_id == run_id).values(
        started_at=at(day), updated_at=ended or at(day), finished_at=ended)))


def write_history(url: str) -> None:
    """`ref`: three completed nights (the newest regressed, with sizing), then one still running.
    `wine`: two completed nights, then a failed one (whose partial figures must not be exposed)."""
    store = HistoryStore(url)
    try:
        write_night(store, "ref-1", "ref", "completed", 1, night_summary(100.0, 4.0, regression="insufficient history"))
        write_night(store, "ref-2", "ref", "completed", 2, night_summary(104.0, 3.0, regression="ok"))
        write_night(store, "ref-3", "ref", "completed", 3, night_summary(
            81.5, 2.5, p95_ms=95.0, sizing={"1000 rps": 13, "50 users": 2}, regression="regressed"))
        write_night(store, "ref-4", "ref", "running", 4)
        write_night(store, "wine-1", "wine", "completed", 1, night_summary(40.0, 2.0, cpu=0.5, concurrency=1))
        write_night(store, "wine-2", "wine", "completed", 2, night_summary(41.0, 2.0, cpu=0.5, concurrency=1))
        write_night(store, "wine-3", "wine", "failed", 3, night_summary(12.0, 9.0, status="failed", cpu=0.5,
                                                                         concurrency=1))
    finally:
        store.close()


def samples_of(text: str) -> list[Any]:
    """Every sample of an OpenMetrics text (the parser refuses anything that is not valid OpenMetrics)."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Any], name: str, **labels: str) -> float | None:
    found = [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"{name} {labels}: {len(found)} samples"
    return found[0].value if found else None


def run_metrics(*args: str) -> str:
    result = CliRunner().invoke(app, ["metrics", *args])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request, tmp_path) -> str:
    """The same history on a SQLite file and on a fresh database of the session's real PostgreSQL server."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path}/history.db"


def test_metrics_gives_the_latest_night_of_every_target(db_url):
    write_history(db_url)
    text = run_metrics("--store", db_url)
    assert text.rstrip().endswith("# EOF")
    samples = samples_of(text)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert families == set(METRIC_NAMES)
    assert {s.labels["target"] for s in samples} == {"ref", "wine"}

    # ref: its newest ended night (ref-3, regressed); the night still running is not a night yet
    ref = {"target": "ref", "pod": "cpu=1 memory=1Gi concurrency=2", "platform": "local"}
    assert value(samples, "nightcap_rps_per_pod", **ref) == 81.5
    assert value(samples, "nightcap_rps_per_pod_low", **ref) == 79.0
    assert value(samples, "nightcap_rps_per_pod_high", **ref) == 84.0
    assert value(samples, "nightcap_operating_rps", **ref) == round(0.7 * 81.5, 2)
    assert value(samples, "nightcap_p95_at_operating_seconds", **ref) == pytest.approx(0.095)
    assert value(samples, "nightcap_sizing_pods", sizing_target="1000 rps", **ref) == 13
    assert value(samples, "nightcap_sizing_pods", sizing_target="50 users", **ref) == 2
    ended = (at(3) + timedelta(minutes=25)).replace(tzinfo=timezone.utc).timestamp()
    assert value(samples, "nightcap_last_run_timestamp_seconds", **ref) == ended
    assert value(samples, "nightcap_last_run_ok", **ref) == 1
    assert value(samples, "nightcap_last_run_status", status="completed", verdict="completed", regression="regressed",
                 **ref) == 1

    # wine: its newest night failed; no figure of it (partial) nor of the night before (stale) is exposed
    wine = {"target": "wine", "pod": "cpu=0.5 memory=1Gi concurrency=1", "platform": "local"}
    assert value(samples, "nightcap_last_run_ok", **wine) == 0
    assert value(samples, "nightcap_last_run_status", status="failed", verdict="failed", regression="not run",
                 **wine) == 1
    assert value(samples, "nightcap_last_run_timestamp_seconds", **wine) == ended
    for name in ("nightcap_rps_per_pod", "nightcap_operating_rps", "nightcap_sizing_pods"):
        assert not [s for s in samples if s.name == name and s.labels["target"] == "wine"], name
    assert len([s for s in samples if s.name == "nightcap_last_run_status"]) == 2  # one series per target

    only = samples_of(run_metrics("--store", db_url, "--target", "wine"))
    assert {s.labels["target"] for s in only} == {"wine"}


def test_metrics_reads_the_store_of_a_config_and_writes_a_textfile(tmp_path):
    url = f"sqlite:///{tmp_path}/nightly/history.db"
    write_history(url)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 500},
                                      "store": {"url": "sqlite:///elsewhere.db"}}))
    out = tmp_path / "textfile" / "nightcap.prom"
    assert run_metrics("--config", str(config), "--set", f"store.url={url}", "--out", str(out)) == ""
    samples = samples_of(out.read_text())
    assert value(samples, "nightcap_rps_per_pod", target="ref") == 81.5
    assert [p.name for p in out.parent.iterdir()] == ["nightcap.prom"]  # the temporary file was renamed over it
    # node_exporter's textfile collector reads the classic text format: the same text parses there too
    assert {f.name for f in classic_text_families(out.read_text())} >= {"nightcap_rps_per_pod", "nightcap_last_run_ok"}


def test_metrics_without_a_history_creates_none(tmp_path):
    missing = tmp_path / "typo" / "history.db"
    result = CliRunner().invoke(app, ["metrics", "--store", f"sqlite:///{missing}"])
    assert result.exit_code == 0
    assert samples_of(result.stdout) == [] and "No history yet" in result.stderr
    assert not missing.exists() and not missing.parent.exists()
    bad = CliRunner().invoke(app, ["metrics", "--store", "postgresql+nosuchdriver://u:hunter2@127.0.0.1/db"])
    assert bad.exit_code == 2 and "store.url" in bad.stderr and "hunter2" not in bad.stderr + bad.stdout


def test_an_older_history_opens_and_gives_its_metrics(tmp_path):
    """A history written by schema 1 (tests/fixtures/history-v1.db: no capacity block in its summaries)."""
    path = tmp_path / "history.db"
    shutil.copy(FIXTURE_V1, path)
    samples = samples_of(run_metrics("--store", f"sqlite:///{path}"))
    # wine's newest night: completed, v1 summaries only had saturation.rps: one pod's figure is that over 1 replica
    assert value(samples, "nightcap_rps_per_pod", target="wine") == 123.0
    assert value(samples, "nightcap_rps_per_pod_low", target="wine") is None  # no interval was stored then
    assert value(samples, "nightcap_p95_at_operating_seconds", target="wine") == pytest.approx(0.3)
    assert value(samples, "nightcap_operating_rps", target="wine") is None  # not verified open loop then
    # ref: the night left 'running' (its runner died) is not the latest; the cancelled one before it is
    assert value(samples, "nightcap_last_run_ok", target="ref") == 0
    assert value(samples, "nightcap_last_run_status", target="ref", status="cancelled") == 1
    assert value(samples, "nightcap_last_run_timestamp_seconds", target="ref") == datetime(
        2026, 1, 7, 2, 20, tzinfo=timezone.utc).timestamp()
    store = HistoryStore(f"sqlite:///{path}")
    try:  # the v1 summaries have no pod: the pod label comes from the config stored with the night
        platform = store.get_run("20260107-020000-000007")["config"]["platform"]
    finally:
        store.close()
    assert value(samples, "nightcap_last_run_ok", target="ref", pod=pod_label(platform)) == 0
    assert pod_label(platform).startswith("cpu=") and "concurrency=" in pod_label(platform)


# -- the samples themselves (pure) ----------------------------------------------------------------------------------


def test_a_missed_operating_rate_reports_the_backed_off_rate_and_its_p95():
    summary = night_summary(100.0, 5.0, rate=52.5, p95_ms=900.0)  # 70 rps missed the SLO; the back-off met 52.5
    summary["operating_point"]["verification"] += [{"rate_rps": 35.0, "p95_ms": 60.0},
                                                   {"rate_rps": 52.50001, "p95_ms": 140.0}]
    night = tonight("ref", "local", "completed", summary, figures(summary), datetime(2026, 3, 5, tzinfo=timezone.utc))
    samples = {s.metric: s.value for s in night_samples(night)}
    assert samples["nightcap_operating_rps"] == 52.5
    assert samples["nightcap_p95_at_operating_seconds"] == pytest.approx(0.14)


def test_an_inconclusive_headline_exposes_no_figure_of_its_own():
    summary = night_summary(100.0, 5.0, sizing={"200 rps": 3}, verdict="inconclusive")
    summary["saturation"]["inconclusive"] = "the search stopped at max_users before the knee"
    names = {s.metric for s in night_samples(tonight("ref", "local", "completed", summary, {}))}
    assert "nightcap_rps_per_pod" not in names and "nightcap_operating_rps" not in names
    assert {"nightcap_sizing_pods", "nightcap_last_run_ok", "nightcap_last_run_status"} <= names
    status = [s for s in night_samples(tonight("ref", "local", "completed", summary, {}))
              if s.metric == "nightcap_last_run_status"]
    assert status[0].labels["verdict"] == "inconclusive"


def test_pod_labels_read_like_tuning_candidates():
    assert pod_label({"cpu": 1.0, "memory": GiB, "concurrency": 2}) == "cpu=1 memory=1Gi concurrency=2"
    assert pod_label({"cpu": 0.25, "memory": 256 * 2**20, "concurrency": 8}) == "cpu=0.25 memory=256Mi concurrency=8"
    assert pod_label({"cpu": None, "memory": None, "concurrency": 4}) == "cpu=unlimited memory=unlimited concurrency=4"


def test_every_sample_carries_its_metrics_labels_and_the_text_is_openmetrics():
    summary = night_summary(100.0, 5.0, sizing={"1000 rps": 11})
    samples = night_samples(tonight("a \"quoted\" target\\", "kubernetes", "completed", summary, figures(summary)))
    specs = {m.name: m for m in METRICS}
    assert {s.metric for s in samples} == set(METRIC_NAMES)  # a completed night with sizing has every metric
    for sample in samples:
        assert set(sample.labels) == set(specs[sample.metric].labels)
    parsed = samples_of(exposition(samples))
    assert value(parsed, "nightcap_rps_per_pod", target="a \"quoted\" target\\", platform="kubernetes") == 100.0


def test_the_samples_module_stays_pure():
    """metrics_samples.py decides what is exposed without prometheus_client or Prefect (tests/test_layering.py)."""
    from test_layering import FORBIDDEN, ROOT as PKG, impure_imports

    impure = impure_imports(PKG / "results" / "metrics_samples.py", ("prometheus_client", *FORBIDDEN))
    assert impure == []


# -- the configuration -------------------------------------------------------------------------------------------


def test_a_pushgateway_host_not_allowed_is_refused_naming_the_field():
    base = {"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 500}}
    with pytest.raises(ConfigError) as refused:
        validate({**base, "publish": {"pushgateway": "http://metrics.example.com:9091"}})
    text = refused.value.render()
    assert "publish.pushgateway" in text and "publish.allowed_hosts" in text and "metrics.example.com" in text
    ok = validate({**base, "publish": {"pushgateway": "http://metrics.example.com:9091",
                                       "allowed_hosts": ["metrics.example.com"]}})
    assert ok.publish.pushgateway == "http://metrics.example.com:9091"
    with pytest.raises(ConfigError, match="publish.pushgateway"):
        validate({**base, "publish": {"pushgateway": "ftp://127.0.0.1/x"}})


def test_a_pushgateway_password_is_not_stored_with_the_run():
    cfg = validate({"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 500},
                    "publish": {"pushgateway": "https://nightcap:s3cret-pw@127.0.0.1:9091"}})
    dumped = json.dumps(config_dump(cfg))
    assert "s3cret-pw" not in dumped and "https://nightcap:***@127.0.0.1:9091" in dumped


# -- pushing -----------------------------------------------------------------------------------------------------


@contextmanager
def recording_pushgateway(answer: int = 200) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A Pushgateway stand-in on 127.0.0.1: records every PUT/POST (method, path, headers, body) and answers."""
    seen: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def record(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = record

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="pushgateway-stand-in", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def pushed(request: dict[str, Any]) -> list[Any]:
    """The samples of one recorded push (prometheus_client pushes the classic text format)."""
    return [s for family in classic_text_families(request["body"]) for s in family.samples]


@pytest.mark.slow
def test_push_puts_the_night_under_job_and_target():
    summary = night_summary(100.0, 5.0, sizing={"1000 rps": 11}, regression="ok")
    samples = night_samples(tonight("ref/a", "local", "completed", summary, figures(summary)))
    with recording_pushgateway() as (url, seen):
        push(url, "ref/a", samples)
    assert len(seen) == 1 and seen[0]["method"] == "PUT"  # PUT: replaces what this target pushed last night
    encoded = base64.urlsafe_b64encode(b"ref/a").decode()  # a '/' in a grouping value is sent base64-encoded
    assert seen[0]["path"] == f"/metrics/job/nightcap/target@base64/{encoded}"
    body = pushed(seen[0])
    assert value(body, "nightcap_rps_per_pod", target="ref/a") == 100.0
    assert value(body, "nightcap_sizing_pods", target="ref/a", sizing_target="1000 rps") == 11
    assert value(body, "nightcap_last_run_status", target="ref/a", regression="ok") == 1


@pytest.mark.slow
def test_push_sends_basic_auth_and_names_a_refusal_without_the_password():
    samples = night_samples(tonight("ref", "local", "failed", {"verdict": "failed"}, {}))
    with recording_pushgateway(answer=401) as (url, seen):
        secret_url = url.replace("http://", "http://nightcap:s3cret-pw@")
        with pytest.raises(PushFailed) as failed:
            push(secret_url, "ref", samples)
    expected = "Basic " + base64.b64encode(b"nightcap:s3cret-pw").decode()
    assert seen and seen[0]["headers"].get("Authorization") == expected
    assert "s3cret-pw" not in str(failed.value) and "nightcap:***@127.0.0.1" in str(failed.value)
    assert "401" in str(failed.value) and "publish.pushgateway" in str(failed.value)


@pytest.mark.slow
def test_push_to_a_closed_port_fails_fast_with_a_message():
    t0 = time.monotonic()
    with pytest.raises(PushFailed, match="publish.pushgateway http://127.0.0.1:.*(refused|Errno)"):
        push(f"http://127.0.0.1:{closed_port()}", "ref", [])
    assert time.monotonic() - t0 < 5


# -- at the end of a real run ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_pushes_its_night_at_the_end(prefect_api, leftovers, tmp_path):
    """A short real run of the reference target (4 slots x 20 ms = 200 rps): the end of the run pushes once,
    and what it pushed is what `nightcap metrics` reads from the history afterwards."""
    from test_stages import base, run_flow

    with recording_pushgateway() as (url, seen):
        cfg = base()
        cfg["stages"] = ["single_client"]
        cfg["load"]["verify_s"] = 1.0
        cfg["publish"] = {"pushgateway": url}
        state, summary, _ = run_flow(tmp_path, cfg)
    assert state.is_completed(), state.message
    assert len(seen) == 1 and seen[0]["path"] == "/metrics/job/nightcap/target/ref-test"
    body = pushed(seen[0])
    per_pod = summary["capacity"]["per_pod"]
    labels = {"target": "ref-test", "pod": pod_label(per_pod["pod"]), "platform": "local"}
    assert value(body, "nightcap_rps_per_pod", **labels) == per_pod["rps"]
    assert [value(body, "nightcap_rps_per_pod_low", **labels), value(body, "nightcap_rps_per_pod_high", **labels)] \
        == per_pod["ci"]
    assert value(body, "nightcap_operating_rps", **labels) == summary["slo_capacity"]["rate_rps"]
    assert value(body, "nightcap_last_run_ok", **labels) == 1
    assert value(body, "nightcap_last_run_status", status="completed", regression="not run", **labels) == 1
    assert not [w for w in summary["warnings"] if "pushgateway" in w]

    # the next morning: `nightcap metrics` over the run's history gives the same night (its end time differs by the
    # moments between the push and the history's finished_at)
    read = samples_of(run_metrics("--store", f"sqlite:///{tmp_path}/history.db"))
    strip = lambda samples: sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in samples  # noqa: E731
                                   if s.name != "nightcap_last_run_timestamp_seconds")
    assert strip(read) == strip(body)
    assert abs(value(read, "nightcap_last_run_timestamp_seconds", **labels)
               - value(body, "nightcap_last_run_timestamp_seconds", **labels)) < 60


@pytest.mark.slow
def test_a_pushgateway_that_is_down_is_a_warning_and_the_night_completes(prefect_api, leftovers, tmp_path):
    from flows.capacity_check import capacity_check
    from test_stages import base

    cfg = base()
    cfg["stages"] = []  # deploy, smoke request, teardown: the cheapest night there is (no steps, no steps.csv)
    cfg["publish"] = {"pushgateway": f"http://127.0.0.1:{closed_port()}"}
    cfg["store"] = {"url": f"sqlite:///{tmp_path}/history.db"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    state = capacity_check(config=str(tmp_path / "config.yaml"), overrides=[], out=str(tmp_path / "out"),
                           return_state=True)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert state.is_completed(), state.message
    assert summary["status"] == "completed"
    warnings = [w for w in summary["warnings"] if "publish.pushgateway" in w]
    assert len(warnings) == 1 and "nightcap metrics" in warnings[0], summary["warnings"]
    assert "publish.pushgateway" in (tmp_path / "out" / "report.md").read_text()  # the report says so too
    assert time.monotonic() - t0 < 120
    store = HistoryStore(f"sqlite:///{tmp_path}/history.db")
    try:
        assert [r["status"] for r in store.latest_nights("ref-test")] == ["completed"]
    finally:
        store.close()


# -- the Prometheus rules and the Grafana dashboard --------------------------------------------------------------

METRIC_NAME = re.compile(r"\bnightcap_[a-z0-9_]+\b")


def named_metrics(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


def test_alert_rules_are_complete_and_name_only_emitted_metrics():
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {"NightcapCapacityRegressed", "NightcapNightNotRun", "NightcapLastRunNotOk",
                                           "NightcapRpsPerPodBelowThreshold"}
    for rule in rules:
        missing = {"expr", "for", "labels", "annotations"} - set(rule)
        assert not missing, f"{rule.get('alert')}: no {sorted(missing)}"
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        names = named_metrics(rule["expr"])
        assert names, f"{rule['alert']}: its expression names no nightcap metric"
        assert names <= set(METRIC_NAMES), f"{rule['alert']}: {sorted(names - set(METRIC_NAMES))} are not emitted"
        for label in re.findall(r"\{\{\s*\$labels\.(\w+)", json.dumps(rule["annotations"])):
            assert label in {"target", "pod", "platform", "status", "verdict"}, (rule["alert"], label)


def test_alert_rules_pass_promtool_where_it_is_installed():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed here: the rules were checked by YAML shape and metric names only")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_panels_name_only_emitted_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            names = named_metrics(expr)
            assert names, f"panel {panel['title']!r}: {expr!r} names no nightcap metric"
            assert names <= set(METRIC_NAMES), f"panel {panel['title']!r}: {sorted(names - set(METRIC_NAMES))}"
            used |= names
    for variable in dashboard["templating"]["list"]:
        query = variable.get("definition") or ""
        assert named_metrics(query) <= set(METRIC_NAMES), variable["name"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # the panels: rps per pod with its interval, operating rate, p95 at it, sizing pods, last run status
    assert {"nightcap_rps_per_pod", "nightcap_rps_per_pod_low", "nightcap_rps_per_pod_high", "nightcap_operating_rps",
            "nightcap_p95_at_operating_seconds", "nightcap_sizing_pods", "nightcap_last_run_ok",
            "nightcap_last_run_status"} <= used
