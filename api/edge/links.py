"""Redis for Trio: the few commands crashd uses, behind one small interface, two ways.

``StreamLink`` is what the feed relay, the edges and the command path need of Redis:
``append`` (pipelined ``XADD``s, each with its entry id, trimmed) and ``read``
(``XREAD``, optionally blocking) carry every record and command; ``get``/``set`` hold the
feed's current epoch. Only commands Valkey shares with Redis 7.0 (``XADD … MINID ~``,
``XREAD``, ``GET``, ``SET``, ``EXISTS``, ``DEL``).

Two implementations, measured side by side by ``python -m bench cluster`` (docs/scale-out.md):

* ``CoredisLink``: coredis ≥ 6, natively async on AnyIO, so on Trio (no thread hop);
* ``ThreadedRedisLink``: redis-py's synchronous client, each call in a worker thread
  (``trio.to_thread``), a blocking ``XREAD`` holding its own thread.

``open_link(url)`` picks redis-py in a thread unless ``client="coredis"``: measured side
by side (``python -m bench cluster`` and ``python -m bench fanout --edges 2``, figures in
docs/scale-out.md), it cost the engine — the one writer, the resource that does not
scale out — 9-19% less CPU per published frame, an edge 6-9% less per delivered
message, and had the lower delay p50 and p99 in every run; the thread hops cost less
than coredis's own machinery on this path.
URLs: ``redis://host:port/db``, ``rediss://…`` (TLS), ``unix:///path/to/redis.sock``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, Protocol

import trio

Entry = tuple[str, bytes]
"""A stream entry: its id (``"<ms>-<seq>"``) and the one field crashd stores, ``r``."""

FIELD = b"r"

Client = Literal["coredis", "redis-py"]
CLIENTS: tuple[Client, ...] = ("coredis", "redis-py")


class LinkError(Exception):
    """Redis could not be reached or refused a command (the caller retries or gives up)."""


class StreamLink(Protocol):
    async def append(
        self,
        key: str,
        entries: Sequence[Entry],
        *,
        minid: str | None = None,
        maxlen: int | None = None,
    ) -> list[str]:
        """``XADD`` each entry (id ``"*"``: Redis picks) in one round trip, trimming
        approximately to ``minid`` or ``maxlen``; returns the ids."""
        ...

    async def read(
        self, key: str, after: str, *, block_ms: int | None = None, count: int = 1000
    ) -> list[Entry]:
        """Entries of ``key`` after id ``after``; waits up to ``block_ms`` for one if
        ``block_ms`` is given (then ``[]`` on timeout)."""
        ...

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes) -> None: ...
    async def exists(self, key: str) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def aclose(self) -> None: ...


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CoredisLink:
    """coredis on Trio. Its client runs a task group of its own: enter it with
    ``open_link`` (in the task that owns the link), then use it from any task."""

    def __init__(self, url: str) -> None:
        import coredis

        self._redis: Any = coredis.Redis.from_url(url, decode_responses=False)

    async def _client(self) -> Any:
        return self._redis

    async def append(
        self,
        key: str,
        entries: Sequence[Entry],
        *,
        minid: str | None = None,
        maxlen: int | None = None,
    ) -> list[str]:
        from coredis.tokens import PureToken

        trim: dict[str, Any] = {}
        if minid is not None:
            trim = {
                "trim_strategy": PureToken.MINID,
                "threshold": minid,
                "trim_operator": PureToken.APPROXIMATELY,
            }
        elif maxlen is not None:
            trim = {
                "trim_strategy": PureToken.MAXLEN,
                "threshold": maxlen,
                "trim_operator": PureToken.APPROXIMATELY,
            }
        try:
            redis = await self._client()
            if len(entries) == 1:
                entry_id, data = entries[0]
                return [_text(await redis.xadd(key, {FIELD: data}, identifier=entry_id, **trim))]
            results = []
            async with redis.pipeline(transaction=False) as pipe:
                for i, (entry_id, data) in enumerate(entries):
                    last = i == len(entries) - 1
                    results.append(
                        pipe.xadd(key, {FIELD: data}, identifier=entry_id, **(trim if last else {}))
                    )
            return [_text(await r) for r in results]
        except Exception as exc:
            raise LinkError(f"XADD {key}: {exc}") from exc

    async def read(
        self, key: str, after: str, *, block_ms: int | None = None, count: int = 1000
    ) -> list[Entry]:
        try:
            redis = await self._client()
            found = await redis.xread({key: after}, count=count, block=block_ms)
        except Exception as exc:
            raise LinkError(f"XREAD {key}: {exc}") from exc
        if not found:
            return []
        out: list[Entry] = []
        for entries in found.values():
            for entry in entries:
                out.append((_text(entry.identifier), bytes(entry.field_values.get(FIELD, b""))))
        return out

    async def get(self, key: str) -> bytes | None:
        try:
            value = await (await self._client()).get(key)
        except Exception as exc:
            raise LinkError(f"GET {key}: {exc}") from exc
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes) -> None:
        try:
            await (await self._client()).set(key, value)
        except Exception as exc:
            raise LinkError(f"SET {key}: {exc}") from exc

    async def exists(self, key: str) -> bool:
        try:
            return bool(await (await self._client()).exists([key]))
        except Exception as exc:
            raise LinkError(f"EXISTS {key}: {exc}") from exc

    async def delete(self, key: str) -> None:
        try:
            await (await self._client()).delete([key])
        except Exception as exc:
            raise LinkError(f"DEL {key}: {exc}") from exc

    async def aclose(self) -> None:
        pass  # the client is closed by leaving ``open_link``


class ThreadedRedisLink:
    """redis-py's synchronous client in worker threads (one thread per call in flight)."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, decode_responses=False)
        self._limiter = trio.CapacityLimiter(16)

    async def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            return fn(*args, **kwargs)

        try:
            return await trio.to_thread.run_sync(
                call, limiter=self._limiter, abandon_on_cancel=True
            )
        except Exception as exc:
            raise LinkError(f"{what}: {exc}") from exc

    async def append(
        self,
        key: str,
        entries: Sequence[Entry],
        *,
        minid: str | None = None,
        maxlen: int | None = None,
    ) -> list[str]:
        def call() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for i, (entry_id, data) in enumerate(entries):
                last = i == len(entries) - 1
                pipe.xadd(
                    key,
                    {FIELD: data},
                    id=entry_id,
                    minid=minid if last else None,
                    maxlen=maxlen if last and minid is None else None,
                    approximate=True,
                )
            return pipe.execute()  # type: ignore[no-any-return]

        results = await self._run(f"XADD {key}", call)
        return [_text(r) for r in results]

    async def read(
        self, key: str, after: str, *, block_ms: int | None = None, count: int = 1000
    ) -> list[Entry]:
        found = await self._run(
            f"XREAD {key}", self._redis.xread, {key: after}, count=count, block=block_ms
        )
        out: list[Entry] = []
        for _stream, entries in found or []:
            for entry_id, fields in entries:
                out.append((_text(entry_id), bytes(fields.get(FIELD, b""))))
        return out

    async def get(self, key: str) -> bytes | None:
        value = await self._run(f"GET {key}", self._redis.get, key)
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes) -> None:
        await self._run(f"SET {key}", self._redis.set, key, value)

    async def exists(self, key: str) -> bool:
        return bool(await self._run(f"EXISTS {key}", self._redis.exists, key))

    async def delete(self, key: str) -> None:
        await self._run(f"DEL {key}", self._redis.delete, key)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self._redis.close()


@contextlib.asynccontextmanager
async def open_link(url: str, client: Client = "redis-py") -> AsyncIterator[StreamLink]:
    """A link to Redis at ``url`` for the life of the block (connections are opened as
    needed, and re-opened after a failure, by the client's pool)."""
    if client == "redis-py":
        threaded = ThreadedRedisLink(url)
        try:
            yield threaded
        finally:
            await threaded.aclose()
        return
    link = CoredisLink(url)
    async with link._redis:
        yield link


def redis_available() -> str | None:
    """``None`` if both Redis clients import, else why not (tests skip with it)."""
    try:
        import coredis  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        return f"the Redis clients are not installed ({exc.name}): pip install 'crashd[redis]'"
    return None
