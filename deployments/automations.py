"""Save the notification block and write deployments/automations.yaml with its id, ready to load.

    .venv/bin/python deployments/automations.py --webhook-url URL --out FILE [--missing-after-s 93600]
    .venv/bin/prefect automation create --from-file FILE

Talks to the Prefect server named by PREFECT_API_URL (or the profile's). The block is a Custom Webhook
notification block named `nightcap-alerts` (`--block-name`), saved again (overwritten) on every call, that
POSTs JSON `{"subject": ..., "body": ...}` to the URL. Each automation is validated against Prefect's own
schema before the file is written, so a mistake shows here and not when an alert should have gone out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).with_name("automations.yaml")
PROACTIVE_NAME = "nightcap: nightly check did not run"


def save_block(url: str, name: str) -> str:
    """Save (or overwrite) the webhook block; returns its id."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name=name,
        url=url,
        method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        headers={"Content-Type": "application/json"},
    )
    return str(block.save(name, overwrite=True))


def render(block_id: str, missing_after_s: float, template: Path = TEMPLATE) -> dict[str, Any]:
    """The template with the block id and the proactive window filled in, each automation validated."""
    from prefect.events.schemas.automations import AutomationCore

    data = yaml.safe_load(template.read_text())
    for automation in data["automations"]:
        for action in automation["actions"]:
            if action.get("type") == "send-notification":
                action["block_document_id"] = block_id
        if automation["name"] == PROACTIVE_NAME:
            automation["trigger"]["within"] = missing_after_s
        AutomationCore.model_validate(automation)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhook-url", required=True, help="where notifications are POSTed")
    parser.add_argument("--out", required=True, type=Path, help="the file to write, for `prefect automation create`")
    parser.add_argument("--block-name", default="nightcap-alerts", help="name of the notification block")
    parser.add_argument("--missing-after-s", type=float, default=26 * 3600,
                        help="seconds without a completed run before 'did not run' fires (>= 10; default 26 h)")
    args = parser.parse_args(argv)
    if not args.webhook_url.startswith(("http://", "https://")):
        parser.error(f"--webhook-url must be an http(s) URL, got {args.webhook_url!r}")
    if args.missing_after_s < 10:
        parser.error(f"--missing-after-s must be at least 10 (Prefect's minimum for proactive triggers), "
                     f"got {args.missing_after_s:g}")
    block_id = save_block(args.webhook_url, args.block_name)
    data = render(block_id, args.missing_after_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    names = ", ".join(repr(a["name"]) for a in data["automations"])
    print(f"saved notification block {args.block_name!r} ({block_id}); wrote {names} to {args.out}")
    print(f"next: prefect automation create --from-file {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
