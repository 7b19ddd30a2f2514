"""What is written anywhere leaves secrets out: masked keys, scrubbed strings, passwords out of URLs."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

if TYPE_CHECKING:
    from nightcap.config import Config

REDACTED = "***"
_SECRET_KEY = re.compile(r"^(.*[-_])?(authorization|api[-_]?key|token|secret|password|passwd|bearer|credentials?)$", re.I)


def sanitize(value: Any, redact: Iterable[str] = ()) -> Any:
    """JSON-safe copy with secret-looking keys masked and every `redact` string scrubbed."""
    secrets = [s for s in redact if s]

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        return text

    def walk(node: Any, key: str = "") -> Any:
        if key and _SECRET_KEY.match(key) and node not in (None, "", {}, []):
            return REDACTED
        if isinstance(node, Mapping):
            return {str(k): walk(v, str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple, set)):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return scrub(node)
        if isinstance(node, float) and not math.isfinite(node):
            return None
        if node is None or isinstance(node, (bool, int, float)):
            return node
        return scrub(str(node))

    return walk(value)


def config_dump(config: "Config", redact: Iterable[str] = ()) -> dict[str, Any]:
    """The config as stored with a run: header values are stripped since they may carry credentials."""
    data = config.model_dump(mode="json")
    target = data.get("target") or {}
    target["headers"] = {name: REDACTED for name in (target.get("headers") or {})}
    for key in ("url", "tracking_uri"):  # http://user:password@host: the tracking server's too
        if target.get(key):
            target[key] = without_password(target[key])
    store = data.get("store") or {}
    if store.get("url"):
        store["url"] = safe_url(store["url"])
    publish = data.get("publish") or {}
    if publish.get("pushgateway"):  # a Pushgateway behind basic auth: user:password@host
        publish["pushgateway"] = without_password(publish["pushgateway"])
    return sanitize(data, redact)


def without_password(url: str) -> str:
    """http://user:secret@host/ -> http://user:***@host/ (a password in a URL is still a password)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}"))


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages and tables."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable store URL>"


