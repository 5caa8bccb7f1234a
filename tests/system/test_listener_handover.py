"""An API process's shared-port listener is handed to Hypercorn as ``fd://N``, and
Hypercorn closes N when it stops. Our socket object must not close N again when it is
collected: by then N is another file's descriptor (CI saw a later server's database
lock lose its descriptor, so its release failed with EBADF and its flock went early)."""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path

from crashd.api.cluster.apiproc import hand_over, reuse_port_listener


def test_the_handed_over_descriptor_is_closed_once(tmp_path: Path) -> None:
    listener = reuse_port_listener("127.0.0.1", 0, 8)
    bind = hand_over(listener)
    assert bind.startswith("fd://")
    fd = int(bind.removeprefix("fd://"))
    # What Hypercorn does with the bind: a socket of its own on the descriptor, closed
    # when it stops serving.
    theirs = socket.socket(fileno=fd)
    assert theirs.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    theirs.close()
    # N reused by a file: the next open takes the lowest free descriptor, N, unless
    # another thread took it first (then dup2 puts the file exactly there).
    opened = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    if opened != fd:
        os.dup2(opened, fd)
        os.close(opened)
    try:
        del listener
        gc.collect()
        os.fstat(fd)  # still the file's: EBADF here if the listener closed N again
        assert os.write(fd, b"still open") == 10
    finally:
        os.close(fd)
