"""The open loop on the master: the ledger of arrivals by the window (epoch) that planned them, and its routes.

`GET /nightcap/open`: the open-loop counters (planned, sent, late, dropped, completed, ok, latency
sum, in-flight peak) per worker over the windows asked for, whenever their arrivals came back;
`POST /nightcap/open/mark` closes the current window, as `/stats/reset` does. The workers' side is
`nightcap_open_loop.py`; the entry, `locustfile.py`, installs the hooks (`on_open_reset`, `on_open_report`,
`add_open_routes`).
"""

from __future__ import annotations

import time
from typing import Any

import locust.runners

from nightcap_open_loop import MAXIMA, OPEN_ZERO, enter_epoch

KEEP_EPOCHS = 2000  # windows kept for later reads (the autoscale stage re-reads its samples when they settled)
_open_epoch = 0
_ledger: dict[int, dict[str, dict[str, Any]]] = {}  # epoch -> worker -> what the arrivals it planned then did
_open_now: dict[str, dict[str, float]] = {}  # worker -> its last report's stamp, epoch and requests in flight
_master: list[Any] = []  # the master's environment (to tell workers about a new epoch)


def _new_epoch() -> int:
    """Close the current window and start the next on every worker; returns the closed one."""
    global _open_epoch
    closed, _open_epoch = _open_epoch, _open_epoch + 1
    for old in [k for k in _ledger if k <= _open_epoch - KEEP_EPOCHS]:
        del _ledger[old]
    runner = _master[0].runner if _master else None
    if isinstance(runner, locust.runners.MasterRunner):
        runner.send_message("nightcap_epoch", {"epoch": _open_epoch})
    return closed


def on_open_reset() -> None:
    _new_epoch()


def on_open_report(client_id: str, data: dict[str, Any]) -> None:
    stamp = float(data.get("nightcap_t", time.time()))
    now = _open_now.setdefault(client_id, {"epoch": 0, "in_flight": 0, "last": stamp})
    now["last"] = stamp
    report = data.get("nightcap_open")
    if not report:
        return
    now.update(epoch=report["epoch"], in_flight=report["in_flight"])
    if report["epoch"] != _open_epoch and _master:  # it missed the message (it joined later): say it again
        _master[0].runner.send_message("nightcap_epoch", {"epoch": _open_epoch}, client_id)
    for row in report["epochs"]:
        if row["epoch"] <= _open_epoch - KEEP_EPOCHS:
            continue
        state = _ledger.setdefault(row["epoch"], {}).setdefault(
            client_id, {**OPEN_ZERO, "ok_ms": {}, "entered": None, "left": None})
        for key in OPEN_ZERO:
            state[key] = max(state[key], row[key]) if key in MAXIMA else state[key] + row[key]
        for ms, n in row["ok_ms"]:
            state["ok_ms"][int(ms)] = state["ok_ms"].get(int(ms), 0) + int(n)
        state["entered"] = state["entered"] if state["entered"] is not None else row["entered"]
        state["left"] = row["left"] if row["left"] is not None else state["left"]


def _open_read(first: int, last: int, live: Any = None) -> dict[str, Any]:
    """The arrivals planned in epochs `first`..`last`, per worker, whenever they came back; `covered_s` is the
    time the worker spent in those epochs. Settled: every worker left them and nothing of theirs is in flight."""
    workers: dict[str, dict[str, Any]] = {}
    for epoch in range(first, last + 1):
        for wid, s in _ledger.get(epoch, {}).items():
            if live is not None and wid not in live:
                continue
            w = workers.setdefault(wid, {**OPEN_ZERO, "ok_ms": {}, "covered_s": 0.0, "settled": True})
            for key in OPEN_ZERO:
                w[key] = max(w[key], s[key]) if key in MAXIMA else w[key] + s[key]
            for ms, n in s["ok_ms"].items():
                w["ok_ms"][ms] = w["ok_ms"].get(ms, 0) + n
            end = s["left"] if s["left"] is not None else _open_now[wid]["last"]
            w["covered_s"] += max(end - s["entered"], 0.0) if s["entered"] is not None else 0.0
            w["settled"] = w["settled"] and s["left"] is not None and s["sent"] == s["completed"] + s["abandoned"]
    for wid, w in workers.items():
        w.update(ok_ms=sorted([ms, n] for ms, n in w["ok_ms"].items()), in_flight=_open_now[wid]["in_flight"],
                 unsettled=w["sent"] - w["completed"] - w["abandoned"])
    settled = last < _open_epoch and all(w["settled"] for w in workers.values())
    return {"now": time.time(), "epoch": _open_epoch, "first": first, "last": last, "settled": settled,
            "workers": workers}


def add_open_routes(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, locust.runners.WorkerRunner):
        environment.runner.register_message("nightcap_epoch", enter_epoch)
    if environment.web_ui is None:
        return
    _master[:] = [environment]

    @environment.web_ui.app.route("/nightcap/open")
    def open_window() -> Any:
        """?first=&last= (epochs; default the current one); live=1 leaves out workers that left the master."""
        from flask import jsonify, request

        first = request.args.get("first", default=_open_epoch, type=int)
        last = request.args.get("last", default=first if "first" in request.args else _open_epoch, type=int)
        runner = environment.runner
        live = runner.clients if request.args.get("live") and hasattr(runner, "clients") else None
        return jsonify(_open_read(first, last, live))

    @environment.web_ui.app.route("/nightcap/open/mark", methods=["POST"])
    def open_mark() -> Any:
        from flask import jsonify

        closed = _new_epoch()
        return jsonify({"closed": closed, "epoch": _open_epoch})
