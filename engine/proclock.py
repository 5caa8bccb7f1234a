"""One process per resource: an exclusive ``flock`` on ``<file>.lock``.

crashd keeps two things that one process at a time may use: the ledger's database
(a second writer's start-up recovery would void the rounds the first is playing) and
the secret hash chain (two servers playing the same chain would show each other's
players the crash points of games still to come). The kernel drops a ``flock`` when
its holder exits, however it exits, so a crash leaves nothing stale; the lock file
keeps the holder's pid for the refusal message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class InUse(Exception):
    """Another process holds the lock; the message names it and what it holds."""


class ProcessLock:
    """Hold ``<path>.lock`` exclusively until ``release`` (or the process ends)."""

    def __init__(self, path: Path, what: str, error: type[InUse] = InUse) -> None:
        lock = path.with_name(path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise error(
                f"another process (pid {holder}) is using the {what} {path}; one crashd per {what}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
