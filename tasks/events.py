"""Emit a finished run's Prefect events (built by nightcap.results.events) so automations can tell people."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from prefect.events import emit_event

from nightcap.results.events import RunEvent, run_events

log = logging.getLogger(__name__)


def emit_run_events(summary: Mapping[str, Any], status: str, figures: Mapping[str, Any],
                    report: str | None = None) -> list[RunEvent]:
    """Send them; an event that cannot be sent is logged, never a reason to fail the run it describes.

    Inside a flow run Prefect adds the flow run as a related resource. The events go out on Prefect's
    background events worker; `nightcap run` drains it before its Prefect server stops.
    """
    events = run_events(summary, status, figures, report)
    for item in events:
        try:
            emit_event(event=item.event, resource=item.resource, payload=item.payload)
        except Exception as exc:  # noqa: BLE001 - a lost event is reported, the measurement stands
            log.warning("could not emit %s: %s", item.event, exc)
    return events
