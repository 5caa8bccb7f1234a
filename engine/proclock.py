"""One process per resource: an exclusive ``flock`` on ``<file>.lock``.

crashd keeps two things that one process at a time may use: the ledger's database
(a second writer's start-up recovery would void the rounds the first is playing) and
the secret hash chain (two servers playing the same chain would show each other's
players the crash points of games still to come). The kernel drops a ``flock`` when
its holder exits, however it exits, so a crash leaves nothing stale; the lock file
keeps the holder's pid for the refusal message.

Within one process a second opener is refused too, unless the first holder asked to
``share``: the server takes the database's lock that way before it reads anything from
the file, and the ledger's store, opened inside it, joins that hold (a second ``flock``
on a new descriptor would refuse its own process).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class InUse(Exception):
    """Another process holds the lock; the message names it and what it holds."""


def _refusal(holder: str, what: str, path: Path) -> str:
    return f"another process (pid {holder}) is using the {what} {path}; one crashd per {what}"


# Lock file -> [descriptor, holders in this process, 1 if later openers may join].
_held: dict[Path, list[int]] = {}


class ProcessLock:
    """Hold ``<path>.lock`` exclusively until ``release`` (or the process ends)."""

    def __init__(
        self, path: Path, what: str, error: type[InUse] = InUse, *, share: bool = False
    ) -> None:
        lock = path.with_name(path.name + ".lock").absolute()
        self._lock_path = lock
        self._fd: int | None = None
        held = _held.get(lock)
        if held is not None:
            if not held[2]:
                raise error(_refusal(str(os.getpid()), what, path))
            held[1] += 1
            self._fd = held[0]
            return
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise error(_refusal(holder, what, path)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[lock] = [fd, 1, int(share)]
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self._fd = None
        entry = _held[self._lock_path]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[self._lock_path]
            os.close(entry[0])  # closing the descriptor drops the flock
