"""One run per target at a time on this machine: two at once would measure each other."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_DIR = Path(".nightcap/locks")


class RunLock:
    """One run per target at a time on this machine: two at once would measure each other."""

    def __init__(self, target: str, directory: Path = LOCK_DIR):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{target}.lock"
        self.handle = None

    def __enter__(self) -> "RunLock":
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RuntimeError(
                f"another nightcap run against target {self.path.stem!r} is in progress ({owner}); "
                "wait for it to finish, or use a different target.name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self.handle = handle
        return self

    def check(self) -> None:
        """Refuse now if another run holds the lock (taken and released at once: the flow takes it for real)."""
        with self:
            pass

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
