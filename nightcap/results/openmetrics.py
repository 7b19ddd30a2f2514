"""The nights' samples as Prometheus text: the OpenMetrics exposition `nightcap metrics` prints, and the push to a
Pushgateway at the end of a run (`publish.pushgateway`). What the samples are: `metrics_samples.py`.

A push is bounded (`PUSH_TIMEOUT_S`) and never raises anything but `PushFailed`, whose message names the
Pushgateway without its password: the caller turns it into a warning, never a failed night (the history has the
figures, and `nightcap metrics` prints them).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence
from urllib.error import URLError
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest

from nightcap.results.metrics_samples import METRICS, Sample
from nightcap.results.redact import without_password

__all__ = ["CONTENT_TYPE_LATEST", "JOB", "PUSH_TIMEOUT_S", "PushFailed", "exposition", "push", "registry"]

JOB = "nightcap"  # the Pushgateway job; the grouping key adds the target, so each target's push replaces its own
PUSH_TIMEOUT_S = 10.0  # connect and each read: a Pushgateway that hangs must not hold the end of the night


class PushFailed(Exception):
    """The Pushgateway could not be reached or refused the push; the message says which and what to check."""


class NightsCollector:
    """Every metric of `METRICS`, each with the samples given (a metric without any is still described)."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for spec in METRICS:
            family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels, unit=spec.unit)
            for sample in self.samples:
                if sample.metric == spec.name:
                    family.add_metric([sample.labels[name] for name in spec.labels], sample.value)
            yield family


def registry(samples: Sequence[Sample]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NightsCollector(samples))
    return reg


def exposition(samples: Sequence[Sample]) -> str:
    """The OpenMetrics text (ends with `# EOF`)."""
    return generate_latest(registry(samples)).decode("utf-8")


def _handler(url: str) -> tuple[str, Callable[..., Any]]:
    """The URL without credentials, and a handler that sends them as HTTP basic auth when the URL had some."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, default_handler
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))  # host[:port], brackets kept
    user, password = unquote(parts.username), unquote(parts.password or "")

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return bare, handler


def push(url: str, target: str, samples: Sequence[Sample], timeout_s: float = PUSH_TIMEOUT_S) -> None:
    """PUT the samples under job `nightcap` and grouping key `target` (replacing what that target pushed last
    night, so a figure tonight did not measure disappears instead of staying stale). Raises PushFailed."""
    bare, handler = _handler(url)
    try:
        push_to_gateway(bare, job=JOB, registry=registry(samples), grouping_key={"target": target},
                        timeout=timeout_s, handler=handler)
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, timeouts, a malformed URL: one message
        reason = exc.reason if type(exc) is URLError else exc  # an HTTPError says its status: "HTTP Error 401: ..."
        raise PushFailed(f"metrics not pushed to publish.pushgateway {without_password(url)} "
                         f"({type(exc).__name__}: {reason}): check that the Pushgateway is up and reachable from "
                         "here; the night's figures are in the history (`nightcap metrics` prints them)") from None
