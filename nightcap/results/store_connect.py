"""Opening the history database: the engine, and errors that say what to install, start or grant.

A night whose history cannot be written must stop before it deploys anything (a night that stores nothing
can never raise an alarm), so every way opening can fail is turned into one `StoreError` line that names
`store.url` and the fix: the driver to install, the server to start, the right to grant. A store lost
mid-run (the database restarts) is retried by `retrying` until its budget runs out.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, ProgrammingError,
                            SQLAlchemyError)

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///.nightcap/history.db"
CONNECT_TIMEOUT_S = 10
BUSY_TIMEOUT_S = 5.0
# drivers nightcap names in its extras: the pip line that installs each
DRIVER_HINTS = {
    "psycopg": "pip install 'nightcap[postgres]' (the psycopg driver)",
    "psycopg2": "pip install psycopg2-binary, or use postgresql+psycopg:// with pip install 'nightcap[postgres]'",
    "pg8000": "pip install pg8000, or use postgresql+psycopg:// with pip install 'nightcap[postgres]'",
    "pymysql": "pip install pymysql",
}
T = TypeVar("T")


class StoreError(Exception):
    """The history database cannot be opened or written; the message says what to change."""


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0].strip() if text.strip() else exc.__class__.__name__


def display(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable store URL>"


def create(url: str, echo: bool = False) -> Engine:
    """The engine for `url` (folders of a SQLite file created); a bad URL or a missing driver is a StoreError."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"store.url {url!r} is not a database URL; use e.g. sqlite:///.nightcap/history.db "
                         "or postgresql+psycopg://user@host:5432/db") from None
    shown = parsed.render_as_string(hide_password=True)
    connect_args: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"store.url {shown}: cannot create the folder for the SQLite file: "
                                 f"{exc.strerror}; point store.url at a writable path") from None
        # wait a little for a concurrent writer; longer waits are the caller's retries (`retrying`), so a step
        # written mid-run never holds the measurement for long
        connect_args["timeout"] = BUSY_TIMEOUT_S
    elif backend == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S  # an unreachable host fails in seconds, not minutes
    try:
        engine = sa.create_engine(url, echo=echo, connect_args=connect_args, pool_pre_ping=True, future=True)
    except (ImportError, NoSuchModuleError) as exc:
        raise StoreError(missing_driver(shown, parsed.get_driver_name(), exc)) from None
    except (ArgumentError, SQLAlchemyError, TypeError) as exc:
        raise StoreError(f"store.url {shown} cannot be used: {first_line(exc)}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_pragmas)
    return engine


def missing_driver(shown: str, driver: str, exc: BaseException) -> str:
    hint = DRIVER_HINTS.get(driver, f"install the Python package of the {driver!r} driver")
    return (f"store.url {shown} needs the database driver {driver!r}, which is not installed ({first_line(exc)}): "
            f"{hint}; or point store.url at a SQLite file (sqlite:///.nightcap/history.db)")


def explain(shown: str, exc: BaseException, doing: str = "open") -> str:
    """One line for a database error while opening or writing: what failed, and what to change."""
    text = first_line(exc)
    low = text.lower()
    if isinstance(exc, ImportError):
        return missing_driver(shown, getattr(exc, "name", None) or "?", exc)
    if "password authentication failed" in low or "authentication failed" in low:
        fix = "check the user and password in store.url"
    elif "does not exist" in low and "database" in low:
        fix = "create the database (createdb NAME) or correct its name in store.url"
    elif "permission denied" in low or "must be owner" in low or "insufficient privilege" in low \
            or "readonly database" in low or "read-only" in low:
        fix = ("grant the user in store.url the rights it needs: CREATE on the schema (the first run creates "
               "the tables), then SELECT, INSERT, UPDATE, DELETE on runs, steps and schema_version")
    elif "unable to open database file" in low:
        fix = "the SQLite file cannot be opened: check its path in store.url and that its folder is writable"
    elif "locked" in low:
        fix = "another process holds the database locked; wait for it, or give this run its own store.url"
    elif isinstance(exc, OperationalError) or "could not connect" in low or "refused" in low:
        fix = "start the database server, or correct the host and port in store.url"
    elif isinstance(exc, DBAPIError):
        fix = "the database refused the data: see its log (and report it to nightcap if the value is sane)"
    else:
        fix = "check store.url"
    return f"store.url {shown}: cannot {doing} the results history ({exc.__class__.__name__}: {text}); {fix}"


def transient(exc: BaseException) -> bool:
    """Errors worth retrying: a dropped connection, a restarting server, a locked SQLite file."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, ProgrammingError):
        return False
    if isinstance(exc, OperationalError):
        low = first_line(exc).lower()
        return not any(s in low for s in ("authentication", "permission denied", "does not exist", "readonly",
                                          "no such table", "no such column"))
    return False


def retrying(action: Callable[[], T], shown: str, budget_s: float, doing: str = "write to") -> T:
    """Run `action`, retrying transient database errors with backoff for up to `budget_s` seconds."""
    deadline = time.monotonic() + max(0.0, budget_s)
    delay = 0.5
    while True:
        try:
            return action()
        except SQLAlchemyError as exc:
            left = deadline - time.monotonic()
            if not transient(exc) or left <= 0:
                raise StoreError(explain(shown, exc, doing)) from None
            log.warning("history at %s: %s; retrying for up to %.0f s more", shown, first_line(exc), left)
            time.sleep(min(delay, max(left, 0.05)))
            delay = min(delay * 2, 5.0)


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL keeps readers off the writer's back and survives a crash mid-write with a consistent file."""
    cursor = dbapi_conn.cursor()
    try:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception:  # noqa: BLE001 - in-memory and some network filesystems cannot do WAL
            pass
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    finally:
        cursor.close()
