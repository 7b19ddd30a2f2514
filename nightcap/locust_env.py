"""The locustfile's files and environment: the one contract between `load/locust_side/` and whatever starts it.

Local Locust processes (`load/local.py`), in-cluster Locust pods (`load/kubernetes.py`) and the manifest preview
(`kube/render.py`, which preflight dry-runs) configure the same locustfile only through the variables built here,
so this module sits below all three and imports nothing of nightcap.

Locust runs the entry file (`locust -f load/locust_side/locustfile.py`) and puts its directory on sys.path while
it loads it, so the entry imports the files beside it by their bare names. A pod has a stock Locust image and the
files of its ConfigMap, no nightcap: it is sent every file of the directory (`LOCUST_SOURCES`), each under its
own name.
"""

from __future__ import annotations

import json
from pathlib import Path

LOCUST_DIR = Path(__file__).parent / "load" / "locust_side"  # run as files by Locust, never imported by nightcap
LOCUST_ENTRY = "locustfile.py"  # what `locust -f` runs: the user classes and every hook into Locust
LOCUST_SOURCES = {path.name: path for path in sorted(LOCUST_DIR.glob("*.py"))}  # name (a ConfigMap key) -> path
API_KEY_VAR = "NIGHTCAP_API_KEY"  # the variable holding the key in the Locust processes' environment


def locust_source_texts() -> dict[str, str]:
    """What a pod's ConfigMap holds of the locustfile: every file of `LOCUST_DIR` by name, the entry among them."""
    return {name: path.read_text() for name, path in LOCUST_SOURCES.items()}


def locust_env(path: str, method: str, headers: dict[str, str], timeout_s: float, reconnect_s: float,
               payloads_path: str, with_api_key: bool) -> dict[str, str]:
    """The locustfile's settings (see its docstring), the same for local processes and pods.

    The key itself is never in here: with `with_api_key` the locustfile is told the *name* of the variable
    (`API_KEY_VAR`) that the generator fills from its own secret store (process environment or a Secret).
    """
    env = {
        "NIGHTCAP_PATH": path,
        "NIGHTCAP_METHOD": method,
        "NIGHTCAP_PAYLOADS": payloads_path,
        "NIGHTCAP_HEADERS": json.dumps(headers),
        "NIGHTCAP_TIMEOUT_S": str(timeout_s),
        "NIGHTCAP_RECONNECT_S": str(reconnect_s),
        "PYTHONUNBUFFERED": "1",
    }
    if with_api_key:
        env["NIGHTCAP_API_KEY_ENV"] = API_KEY_VAR
    return env
