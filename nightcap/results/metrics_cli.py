"""`nightcap metrics`: the latest night of every target in the OpenMetrics text format, for Prometheus.

Run it where Prometheus can read its output: into node_exporter's textfile collector folder (`--out`, written
atomically so a scrape never reads half a file), or behind any exporter that serves a command's output. Nights
pushed by `publish.pushgateway` carry the same samples. What the samples are: `metrics_samples.py`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console

from nightcap.results.history_cli import sqlite_file_missing
from nightcap.results.metrics_samples import night_samples
from nightcap.results.openmetrics import exposition
from nightcap.results.redact import safe_url
from nightcap.results.store import DEFAULT_URL, HistoryStore, StoreError


def _say(text: str) -> None:
    """One line on stderr, so stdout stays nothing but the exposition."""
    Console(stderr=True, soft_wrap=True, highlight=False).print(text, markup=False)


def metrics_text(store_url: str | None, target: str | None = None) -> str:
    """The exposition of the latest ended night of each target (of `target` only, when given). Raises StoreError."""
    url = store_url or DEFAULT_URL
    if sqlite_file_missing(url):  # reading must not create an empty database where a path was mistyped
        _say(f"No history yet at {safe_url(url)}: no night to expose (run `nightcap run CONFIG` first, or pass "
             "--store URL / --config CONFIG).")
        return exposition([])
    store = HistoryStore(url)
    try:
        nights = store.latest_nights(target)
    finally:
        store.close()
    return exposition([sample for night in nights for sample in night_samples(night)])


def metrics_command(store_url: str | None, target: str | None, out: Path | None) -> int:
    """Print (or write to `out`) the exposition; the exit code: 0, or 2 when the history cannot be opened."""
    try:
        text = metrics_text(store_url, target)
    except StoreError as exc:
        _say(str(exc))
        return 2
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # the textfile collector ignores dot files
    tmp.write_text(text)
    tmp.replace(out)
    return 0
