"""Redis for Trio: the few commands crashd uses, behind one small interface, two ways.

``StreamLink`` is what the feed relay, the edges and the command path need of Redis:
``append`` (pipelined ``XADD``s, each with its entry id, trimmed) and ``read``
(``XREAD``, optionally blocking) carry every record and command; ``get``/``set`` hold the
feed's current epoch. Only commands Valkey shares with Redis 7.0 (``XADD … MINID ~``,
``XREAD``, ``GET``, ``SET``, ``EXISTS``, ``DEL``).

Two implementations, measured side by side by ``python -m bench cluster`` (docs/scale-out.md):

* ``CoredisLink``: coredis ≥ 6, natively async on AnyIO, so on Trio (no thread hop);
* ``ThreadedRedisLink``: redis-py's synchronous client, each write in a worker thread
  (``trio.to_thread``); its reads (``XREAD``: the edges' and API processes' hot path,
  one per engine frame, mostly blocking) on Trio's own sockets instead, RESP parsed by
  hiredis (``TrioReads``). Profiled on an edge (py-spy), the thread hop of each
  ``XREAD`` — a futex wake, the GIL handed to the worker and back, the wake-up of
  Trio's loop — cost about as much as the edge's own delivery to 100 subscribers.

``open_link(url)`` picks redis-py in a thread unless ``client="coredis"``: measured side
by side (``python -m bench cluster`` and ``python -m bench fanout --edges 2``, figures in
docs/scale-out.md; before its reads moved to ``TrioReads``), it cost the engine — the one writer, the resource that does not
scale out — 9-19% less CPU per published frame, an edge 6-9% less per delivered
message, and had the lower delay p50 and p99 in every run; the thread hops cost less
than coredis's own machinery on this path.
URLs: ``redis://host:port/db``, ``rediss://…`` (TLS), ``unix:///path/to/redis.sock``.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
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


READ_GRACE_S = 5.0
"""How long past its ``BLOCK`` a read may take before the connection counts as lost (a
peer gone without a reset would otherwise hold the reader forever)."""


def _pack(args: Sequence[bytes]) -> bytes:
    """A RESP command: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Connection:
    """One Trio socket to Redis, its replies parsed by ``hiredis.Reader`` (sans-IO)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        import hiredis

        self.stream = stream
        self.reader = hiredis.Reader()
        self._error = hiredis.ReplyError

    async def call(self, *args: bytes) -> Any:
        await self.stream.send_all(_pack(args))
        reader = self.reader
        while (reply := reader.gets()) is False:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                raise LinkError("Redis closed the connection")
            reader.feed(bytes(data))  # the same object: Trio's sockets give bytes
        if isinstance(reply, self._error):
            raise LinkError(str(reply))
        return reply


class TrioReads:
    """``XREAD`` on Trio sockets: a small pool of connections (a blocking read holds
    one; an edge has two readers at most: the feed and its replies). A connection a
    read was cancelled or failed on is closed, never reused (its reply is unknown)."""

    def __init__(self, url: str, pool: int = 4) -> None:
        import redis.connection

        # redis-py's own URL rules (``unix://``, ``redis://``, ``rediss://``, ``?db=``).
        parse: Any = redis.connection.parse_url
        self.options: dict[str, Any] = parse(url)
        self.tls = url.startswith("rediss://")
        self.pool = pool
        self._idle: list[_Connection] = []

    async def _open(self) -> _Connection:
        opts = self.options
        stream: trio.abc.Stream
        if "path" in opts:
            stream = await trio.open_unix_socket(str(Path(opts["path"])))
        elif self.tls:
            stream = await trio.open_ssl_over_tcp_stream(
                opts.get("host") or "localhost",
                opts.get("port") or 6379,
                ssl_context=self._ssl_context(),
                https_compatible=True,
            )
        else:
            stream = await trio.open_tcp_stream(
                opts.get("host") or "localhost", opts.get("port") or 6379
            )
        conn = _Connection(stream)
        try:
            if opts.get("password") is not None:
                auth = [b"AUTH"]
                if opts.get("username"):
                    auth.append(str(opts["username"]).encode())
                await conn.call(*auth, str(opts["password"]).encode())
            if opts.get("db"):
                await conn.call(b"SELECT", str(opts["db"]).encode())
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        """As redis-py reads a ``rediss://`` URL: verified against ``ssl_ca_certs`` (or
        the system's), unless ``ssl_cert_reqs=none``."""
        opts = self.options
        context = ssl.create_default_context(cafile=opts.get("ssl_ca_certs"))
        if str(opts.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def call(self, timeout_s: float, *args: bytes) -> Any:
        try:
            conn = self._idle.pop() if self._idle else await self._open()
        except OSError as exc:
            raise LinkError(f"connecting: {exc}") from exc
        ok = False
        try:
            with trio.fail_after(timeout_s):
                reply = await conn.call(*args)
            ok = True
            return reply
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            raise LinkError(str(exc) or type(exc).__name__) from exc
        finally:
            if ok and len(self._idle) < self.pool:
                self._idle.append(conn)
            else:
                await trio.aclose_forcefully(conn.stream)

    async def xread(self, key: str, after: str, block_ms: int | None, count: int) -> list[Entry]:
        args = [b"XREAD", b"COUNT", str(count).encode()]
        if block_ms is not None:
            args += [b"BLOCK", str(block_ms).encode()]
        args += [b"STREAMS", key.encode(), after.encode()]
        found = await self.call((block_ms or 0) / 1000 + READ_GRACE_S, *args)
        out: list[Entry] = []
        for _stream, entries in found or ():
            for entry_id, fields in entries:
                data = b""
                for i in range(0, len(fields) - 1, 2):
                    if fields[i] == FIELD:
                        data = fields[i + 1]
                        break
                out.append((entry_id.decode(), data))
        return out

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)


class ThreadedRedisLink:
    """redis-py's synchronous client in worker threads (one thread per call in flight),
    reads on Trio sockets (``TrioReads``: see the module docstring)."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, decode_responses=False)
        self._limiter = trio.CapacityLimiter(16)
        self._reads = TrioReads(url)

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
        try:
            return await self._reads.xread(key, after, block_ms, count)
        except LinkError as exc:
            raise LinkError(f"XREAD {key}: {exc}") from exc

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
        await self._reads.aclose()
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
        import hiredis  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        return f"the Redis clients are not installed ({exc.name}): pip install 'crashd[redis]'"
    return None
