"""Commands and replies as they travel through Redis, and the keys they use.

* ``{prefix}:commands`` — one stream for every API process's commands (``MAXLEN ~``);
  an entry is a JSON object: ``id`` (the process's correlation id), ``to`` (its reply
  stream), ``name``, ``principal``, ``key`` and ``fp`` (the Idempotency-Key and the
  request's fingerprint, hex), ``rid`` (request id), ``args``, ``sent_ms`` and
  ``deadline_ms`` (wall clock: after it the API process has answered
  ``engine_unavailable`` and the engine skips the command);
* ``{prefix}:replies:{process}`` — a process's replies: a JSON line (``id``,
  ``status``, ``headers``) then the body's bytes;
* ``{prefix}:public`` — the engine's public commitment (terminating hash, salt…).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from crashd.api.rest.commands import Reply

COMMANDS_MAXLEN = 100_000
REPLIES_MAXLEN = 10_000
COMMAND_TIMEOUT_S = 10.0
"""How long an API process waits for the engine before answering ``engine_unavailable``
(retry with the same key)."""
POSITION = "commands"
"""The name of the engine's read position in the command stream, kept by the ledger."""


def commands_key(prefix: str) -> str:
    return f"{prefix}:commands"


def replies_key(prefix: str, process: str) -> str:
    return f"{prefix}:replies:{process}"


def public_key(prefix: str) -> str:
    return f"{prefix}:public"


@dataclass(frozen=True)
class Answer:
    id: str
    reply: Reply


def encode_reply(correlation: str, reply: Reply) -> bytes:
    head = json.dumps({"id": correlation, "status": reply.status, "headers": reply.headers})
    return head.encode() + b"\n" + reply.body


def decode_reply(data: bytes) -> Answer:
    head, _, body = data.partition(b"\n")
    doc: dict[str, Any] = json.loads(head)
    return Answer(str(doc["id"]), Reply(int(doc["status"]), dict(doc["headers"]), body))


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """A Redis stream id as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
