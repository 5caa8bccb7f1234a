"""API keys: created, listed and revoked by the operator; verified on every request.

A key is ``ck_test_<32 base62>`` (sandbox) or ``ck_live_<32 base62>`` (production): the
prefix tells a human (and a secret scanner) what leaked. Only
``HMAC-SHA256(pepper, key)`` is stored; the key itself is shown once, at creation. The
HMAC is deterministic, so a lookup is one indexed query, and the pepper (a file beside
the database, see :mod:`crashd.api.database`) means a copy of the database alone is useless.

Each key belongs to a partner (``partner_id``), is bound to one environment and carries
scopes. :class:`KeyStore` is synchronous (the CLI uses it directly; the server calls it
from worker threads); :class:`Authenticator` is the server's cached, async front.

Revocation is immediate: revoking bumps a counter row in the same transaction, and the
authenticator reads that counter (one tiny WAL read, no thread hop) on every request,
dropping its cache when it moved. A revocation by ``crashd keys revoke`` in another
process therefore takes effect on the very next request.

Rotation (``crashd keys rotate``) keeps the key id, partner and scopes and issues a new
secret and a new *signing secret* (generation + 1). The previous secret's hash is kept
in ``previous_hash`` until ``previous_until`` (Unix seconds), so both secrets — and both
signing secrets — work during the overlap; one rotation's overlap at a time (rotating
again drops the oldest secret at once). Signing secrets are never stored: each is
``HMAC(pepper, "signing:" + key_id + ":" + generation)``, recomputable by the server
alone, so the database holds nothing a client could sign with (see docs/security.md).

``last_used_at`` is written at most once per key per :data:`LAST_USED_RESOLUTION_S`
(the authenticator remembers when it last wrote), so a busy key costs no write per
request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import trio

from crashd.api import database as apidb
from crashd.api.wire import SCOPES
from crashd.engine.ledger.database import redacted

from . import feedtokens

"""Every scope a key can carry. ``read:game_state``: live state and finished rounds;
``read:balance``: balances of the partner's users; ``write:bet``: place and cash out bets
(and, on a sandbox server, fund users from the faucet)."""

ENV_PREFIX = {"sandbox": "ck_test_", "production": "ck_live_"}
_ALPHABET = string.ascii_letters + string.digits
_SECRET_CHARS = 32  # 62**32 ~ 2**190
_TOKEN = re.compile(rf"ck_(test|live)_[A-Za-z0-9]{{{_SECRET_CHARS}}}")
PARTNER_ID = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
DEFAULT_PARTNER = "default"
HOUSE_LABEL_PREFIX = "crashd:"
"""Labels of the keys the server creates for itself (public viewer and demo sessions)."""
MAX_LABEL = 100
_CACHE_LIMIT = 10_000
LAST_USED_RESOLUTION_S = 60.0
"""``last_used_at`` is accurate to this many seconds (one write per key per period)."""
MAX_OVERLAP_S = 30 * 24 * 3600
SIGNING_PREFIX = "cs_"

_SCHEMA = """
-- The API's own idempotency table of earlier builds: replies are now stored by the
-- ledger in the same commit as their money (its replies table).
DROP TABLE IF EXISTS api_idempotency;
CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT PRIMARY KEY,
    secret_hash  BLOB NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    environment  TEXT NOT NULL CHECK (environment IN ('sandbox', 'production')),
    partner_id   TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    label        TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
);
CREATE TABLE IF NOT EXISTS api_key_revocations (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    counter  INTEGER NOT NULL
);
INSERT OR IGNORE INTO api_key_revocations (id, counter) VALUES (1, 0);
"""

# Columns added after the first release: added in place to an existing table.
_MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("generation", "ALTER TABLE api_keys ADD COLUMN generation INTEGER NOT NULL DEFAULT 0"),
    ("previous_hash", "ALTER TABLE api_keys ADD COLUMN previous_hash BLOB"),
    ("previous_until", "ALTER TABLE api_keys ADD COLUMN previous_until REAL"),
    ("last_used_at", "ALTER TABLE api_keys ADD COLUMN last_used_at TEXT"),
)

# The same tables on PostgreSQL (the ledger's database), at their latest columns; a
# column added later goes in both: an ALTER above, and here an ADD COLUMN IF NOT EXISTS
# after the CREATE (for databases made before it).
_SCHEMA_POSTGRES = """
CREATE TABLE IF NOT EXISTS api_keys (
    id             text PRIMARY KEY,
    secret_hash    bytea NOT NULL UNIQUE,
    prefix         text NOT NULL,
    environment    text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    partner_id     text NOT NULL,
    scopes         text NOT NULL,
    label          text NOT NULL DEFAULT '',
    created_at     text NOT NULL,
    revoked_at     text,
    generation     bigint NOT NULL DEFAULT 0,
    previous_hash  bytea,
    previous_until double precision,
    last_used_at   text
);
CREATE TABLE IF NOT EXISTS api_key_revocations (
    id       bigint PRIMARY KEY CHECK (id = 1),
    counter  bigint NOT NULL
);
INSERT INTO api_key_revocations (id, counter) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE INDEX IF NOT EXISTS api_keys_previous ON api_keys (previous_hash);
"""


class KeyStoreError(Exception):
    """Bad operator input or an unusable key store; one line for the operator."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    prefix: str
    """The first characters of the key (``ck_test_AbCd``): enough to recognise it."""
    environment: str
    partner_id: str
    scopes: tuple[str, ...]
    label: str
    created_at: str
    revoked_at: str | None
    generation: int = 0
    """How many times the key was rotated; names the current signing secret."""
    last_used_at: str | None = None
    previous_until: float | None = None
    """While the previous secret still works after a rotation: until when (Unix s)."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who is calling: what a route receives once a key has been verified."""

    key_id: str
    partner_id: str
    environment: str
    scopes: frozenset[str]
    generation: int = 0
    previous_until: float | None = None
    """Until when (Unix s) the previous generation's secrets still work, if rotated."""
    expires_at: float | None = None
    """Set when the caller presented the *previous* secret (it stops working then), or
    for a feed token, its expiry."""
    user_id: str | None = None
    """A user-scoped feed token's user: it reads that user's channel and orders for that
    user only."""
    via_token: bool = False
    """Presented a feed token (issued by ``key_id``) rather than the API key itself."""

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def signing_generations(self, now: float) -> tuple[int, ...]:
        """Generations whose signing secrets are valid now (two during an overlap)."""
        if self.previous_until is not None and now < self.previous_until and self.generation > 0:
            return (self.generation, self.generation - 1)
        return (self.generation,)


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str
    """The full key: shown once, never stored."""
    signing_secret: str = ""
    """The key's signing secret for signed requests: shown once, never stored."""


def _new_secret(environment: str) -> str:
    return ENV_PREFIX[environment] + "".join(
        secrets.choice(_ALPHABET) for _ in range(_SECRET_CHARS)
    )


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_scopes(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = [s.strip() for s in items if s.strip()]
    if not scopes:
        raise KeyStoreError("give at least one scope: " + ", ".join(SCOPES))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise KeyStoreError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in scopes)  # canonical order, no duplicates


def _row_to_key(row: sqlite3.Row | tuple[object, ...]) -> ApiKey:
    id_, prefix, env, partner, scopes, label, created, revoked, generation, last_used, until = row
    return ApiKey(
        id=str(id_),
        prefix=str(prefix),
        environment=str(env),
        partner_id=str(partner),
        scopes=tuple(str(scopes).split()),
        label=str(label),
        created_at=str(created),
        revoked_at=None if revoked is None else str(revoked),
        generation=int(str(generation)),
        last_used_at=None if last_used is None else str(last_used),
        previous_until=None if until is None else float(str(until)),
    )


_COLUMNS = (
    "id, prefix, environment, partner_id, scopes, label, created_at, revoked_at, "
    "generation, last_used_at, previous_until"
)
_INSERT_COLUMNS = "id, prefix, environment, partner_id, scopes, label, created_at, revoked_at"


class KeyStore:
    """The ``api_keys`` tables of the database file. Thread-safe, blocking."""

    def __init__(self, database: apidb.Database, pepper_file: Path | None = None) -> None:
        self.database = database
        self._db = apidb.Connection(database)
        # A separate connection for the per-request counter read, so it never queues
        # behind a worker thread holding the main connection's lock.
        self._counter_conn = apidb.connect(database)
        try:
            with self._db.write() as conn:
                if self._db.postgres:
                    # Another process may create them at the same moment: one at a time.
                    conn.execute("SELECT pg_advisory_xact_lock(7165139811476030002)")
                    conn.execute(_SCHEMA_POSTGRES)
                else:
                    # Statement by statement: executescript() would commit our transaction.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    present = {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
                    for column, statement in _MIGRATIONS:
                        if column not in present:
                            conn.execute(statement)
                    conn.execute(
                        "CREATE INDEX IF NOT EXISTS api_keys_previous ON api_keys (previous_hash)"
                    )
                has_keys = conn.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None
        except apidb.errors(database) as exc:
            raise apidb.DatabaseError(
                f"cannot prepare API key tables in {redacted(database)}: {exc}"
            ) from None
        # A fresh pepper for existing keys would silently invalidate them all: only
        # create one for an empty key table, otherwise insist on the original.
        self._pepper = apidb.load_pepper(database, create=not has_keys, configured=pepper_file)

    def close(self) -> None:
        self._db.close()
        self._counter_conn.close()

    def signing_secret(self, key_id: str, generation: int) -> str:
        """The signing secret of a key generation: derived, never stored (docs/security.md)."""
        return SIGNING_PREFIX + self.derive_secret(f"signing:{key_id}:{generation}").hex()

    def hash_secret(self, secret: str) -> bytes:
        return hmac.new(self._pepper, secret.encode("ascii"), hashlib.sha256).digest()

    def create(
        self,
        environment: str,
        scopes: tuple[str, ...] | list[str] | str,
        *,
        label: str = "",
        partner_id: str = DEFAULT_PARTNER,
    ) -> CreatedKey:
        if environment not in ENV_PREFIX:
            raise KeyStoreError(f"environment must be sandbox or production, not {environment!r}")
        canonical = parse_scopes(scopes)
        if re.fullmatch(PARTNER_ID, partner_id) is None:
            raise KeyStoreError(f"partner id must match {PARTNER_ID}")
        if len(label) > MAX_LABEL or not label.isprintable():
            raise KeyStoreError(f"label must be printable text of at most {MAX_LABEL} characters")
        secret = _new_secret(environment)
        key = ApiKey(
            id="key_" + secrets.token_hex(8),
            prefix=secret[: len(ENV_PREFIX[environment]) + 4],
            environment=environment,
            partner_id=partner_id,
            scopes=canonical,
            label=label,
            created_at=utc_now(),
            revoked_at=None,
        )
        with self._db.write() as conn:
            conn.execute(
                f"INSERT INTO api_keys ({_INSERT_COLUMNS}, secret_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.id,
                    key.prefix,
                    key.environment,
                    key.partner_id,
                    " ".join(key.scopes),
                    key.label,
                    key.created_at,
                    None,
                    self.hash_secret(secret),
                ),
            )
        return CreatedKey(key=key, secret=secret, signing_secret=self.signing_secret(key.id, 0))

    def rotate(self, key_id: str, overlap_s: float, now: float) -> CreatedKey:
        """Issue a new secret and signing secret; the old ones keep working for
        ``overlap_s`` seconds (0: the old ones stop at once)."""
        if not 0 <= overlap_s <= MAX_OVERLAP_S:
            raise KeyStoreError(f"overlap must be between 0 and {MAX_OVERLAP_S} seconds")
        with self._db.write() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
            if row is None:
                raise KeyStoreError(f"no API key with id {key_id!r}")
            key = _row_to_key(row[:-1])
            if key.revoked_at is not None:
                raise KeyStoreError(f"{key_id} is revoked; create a new key instead")
            secret = _new_secret(key.environment)
            generation = key.generation + 1
            until = now + overlap_s if overlap_s > 0 else None
            prefix = secret[: len(ENV_PREFIX[key.environment]) + 4]
            conn.execute(
                "UPDATE api_keys SET secret_hash = ?, prefix = ?, generation = ?, previous_hash = ?, "
                "previous_until = ? WHERE id = ?",
                (
                    self.hash_secret(secret),
                    prefix,
                    generation,
                    row[-1] if until else None,
                    until,
                    key_id,
                ),
            )
            # Cached principals carry the old generation: make every server drop them.
            conn.execute("UPDATE api_key_revocations SET counter = counter + 1 WHERE id = 1")
        rotated = ApiKey(
            **{**key.__dict__, "prefix": prefix, "generation": generation, "previous_until": until}
        )
        return CreatedKey(
            key=rotated, secret=secret, signing_secret=self.signing_secret(key_id, generation)
        )

    def touch(self, key_id: str, when: str) -> None:
        """Record ``last_used_at`` (called at most once per key per resolution period)."""
        with self._db.write() as conn:
            conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (when, key_id))

    def list(self) -> list[ApiKey]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id"
            ).fetchall()
        return [_row_to_key(r) for r in rows]

    def get(self, key_id: str) -> ApiKey | None:
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        return None if row is None else _row_to_key(row)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent: revoking a revoked key changes nothing)."""
        with self._db.write() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
            if row is None:
                raise KeyStoreError(f"no API key with id {key_id!r}")
            key = _row_to_key(row)
            if key.revoked_at is not None:
                return key
            now = utc_now()
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, key_id))
            conn.execute("UPDATE api_key_revocations SET counter = counter + 1 WHERE id = 1")
        return ApiKey(**{**key.__dict__, "revoked_at": now})

    def lookup(self, secret: str, now: float | None = None) -> ApiKey | None:
        """The active key for a presented secret, or ``None`` (a previous secret counts
        while its rotation overlap lasts)."""
        return self.lookup_with_expiry(secret, now)[0]

    def lookup_with_expiry(
        self, secret: str, now: float | None = None
    ) -> tuple[ApiKey | None, float | None]:
        """The active key and, if ``secret`` is its previous one, when that stops working."""
        if _TOKEN.fullmatch(secret) is None:
            return None, None
        now = time.time() if now is None else now
        digest = self.hash_secret(secret)
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL",
                (digest,),
            ).fetchone()
            if row is not None:
                return _row_to_key(row), None
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE previous_hash = ? AND revoked_at IS NULL "
                "AND previous_until > ?",
                (digest, now),
            ).fetchone()
        if row is None:
            return None, None
        key = _row_to_key(row)
        return key, key.previous_until

    def house_key(
        self, label: str, environment: str, partner_id: str, scopes: tuple[str, ...]
    ) -> str | None:
        """The id of the server's own key labelled ``label`` (created on first use), or
        ``None`` once the operator has revoked it: revoking a house key turns off what
        it issues tokens for, for good. Its secret is discarded at creation: the server
        only ever issues feed tokens under it (``crashd keys list`` shows it)."""
        if not label.startswith(HOUSE_LABEL_PREFIX):
            raise KeyStoreError(f"house key labels start with {HOUSE_LABEL_PREFIX!r}")
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE label = ? AND environment = ? "
                "ORDER BY created_at, id",
                (label, environment),
            ).fetchall()
        keys = [_row_to_key(r) for r in rows]
        if keys:
            active = [k for k in keys if k.active]
            return active[0].id if active else None
        return self.create(environment, scopes, label=label, partner_id=partner_id).key.id

    def derive_secret(self, label: str) -> bytes:
        """A server secret for ``label`` (e.g. feed tokens), derived from the pepper: it
        needs no storage of its own and changes if the pepper ever does."""
        return hmac.new(self._pepper, b"crashd-derived:" + label.encode(), hashlib.sha256).digest()

    def revocation_counter(self) -> int:
        """Bumped by every revocation; read on every request (cheap: WAL, one row)."""
        row = self._counter_conn.execute(
            "SELECT counter FROM api_key_revocations WHERE id = 1"
        ).fetchone()
        return int(row[0])


class Authenticator:
    """Async, cached key verification for the server.

    The cache maps the key's HMAC to its :class:`Principal`. It is dropped whenever the
    revocation counter moves, and bounded (cleared when full: keys are few, so that is
    rare and only costs one lookup each).
    """

    def __init__(self, store: KeyStore, accepted_environments: frozenset[str]) -> None:
        self.store = store
        self.accepted_environments = accepted_environments
        self._cache: dict[bytes, Principal] = {}
        self._counter = -1
        self._hits = 0
        self._misses = 0
        self._touched: dict[str, float] = {}
        """key id -> when its last_used_at was last written (monotonic)."""
        self._token_secret = store.derive_secret(feedtokens.SECRET_LABEL)
        self._active: dict[str, bool] = {}
        """key id -> whether it may issue tokens now (dropped with the cache)."""

    def _cached(self, secret: str, now: float) -> tuple[bytes, Principal | None]:
        """The secret's digest and its cached principal, if any (counted as a hit or a
        miss); a revocation anywhere empties the cache first."""
        self._check_revocations()
        digest = self.store.hash_secret(secret)
        principal = self._cache.get(digest)
        if (
            principal is not None
            and principal.expires_at is not None
            and now >= principal.expires_at
        ):
            del self._cache[digest]  # a previous secret whose overlap just ended
            principal = None
        if principal is not None:
            self._hits += 1
        else:
            self._misses += 1
        return digest, principal

    def _check_revocations(self) -> None:
        counter = self.store.revocation_counter()
        if counter != self._counter:
            self._cache.clear()
            self._active.clear()
            self._counter = counter

    def _remember(
        self, digest: bytes, key: ApiKey | None, expires_at: float | None
    ) -> Principal | None:
        if key is None or key.environment not in self.accepted_environments:
            return None
        principal = Principal(
            key.id,
            key.partner_id,
            key.environment,
            frozenset(key.scopes),
            key.generation,
            key.previous_until,
            expires_at,
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = principal
        return principal

    def _due_touch(self, key_id: str) -> bool:
        now = time.monotonic()
        last = self._touched.get(key_id)
        if last is not None and now - last < LAST_USED_RESOLUTION_S:
            return False
        if len(self._touched) >= _CACHE_LIMIT:
            self._touched.clear()
        self._touched[key_id] = now
        return True

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal for a presented key, or ``None`` if it is unknown, revoked,
        malformed or bound to an environment this server does not serve."""
        if _TOKEN.fullmatch(secret) is None:
            return None
        now = time.time()
        digest, principal = self._cached(secret, now)
        if principal is None:
            key, expires_at = await trio.to_thread.run_sync(
                self.store.lookup_with_expiry, secret, now
            )
            principal = self._remember(digest, key, expires_at)
        if principal is not None and self._due_touch(principal.key_id):
            await trio.to_thread.run_sync(self.store.touch, principal.key_id, utc_now())
        return principal

    def key_active(self, key_id: str) -> bool:
        """Whether ``key_id`` is still an active key of this server's environment."""
        key = self.store.get(key_id)
        return key is not None and key.active and key.environment in self.accepted_environments

    def issue_token(self, claims: feedtokens.FeedClaims) -> str:
        return feedtokens.issue(self._token_secret, claims)

    def token_claims(self, token: str, grace_s: float = 0) -> feedtokens.FeedClaims | None:
        """An authentic token's claims (expired less than ``grace_s`` ago counts); its
        issuing key is not checked here (:meth:`authenticate_token` does)."""
        return feedtokens.verify(self._token_secret, token, time.time(), grace_s)

    async def issuer_active(self, key_id: str) -> bool:
        """Whether ``key_id`` may stand behind tokens now: cached until the revocation
        counter moves, so a page polling with a token costs no database read."""
        self._check_revocations()
        active = self._active.get(key_id)
        if active is None:
            active = await trio.to_thread.run_sync(self.key_active, key_id)
            if len(self._active) >= _CACHE_LIMIT:
                self._active.clear()
            self._active[key_id] = active
        return active

    async def authenticate_token(self, token: str, grace_s: float = 0) -> Principal | None:
        """The principal of a feed token (REST or the feed), or ``None`` if it is forged,
        expired (more than ``grace_s`` ago), for another environment, or its issuing key
        was revoked (revoking a key revokes its tokens)."""
        claims = self.token_claims(token, grace_s)  # an HMAC: no I/O
        if claims is None or claims.environment not in self.accepted_environments:
            return None
        if not await self.issuer_active(claims.key_id):
            return None
        return Principal(
            claims.key_id,
            claims.partner_id,
            claims.environment,
            claims.scopes,
            expires_at=claims.expires_at,
            user_id=claims.user_id,
            via_token=True,
        )

    def statistics(self) -> dict[str, int]:
        return {"cached": len(self._cache), "hits": self._hits, "misses": self._misses}
