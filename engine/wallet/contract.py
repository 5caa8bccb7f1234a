"""The wallet contract: the calls crashd makes to an operator's wallet, and how an answer
is read. Pure: bodies in, outcomes out; the transport (``crashd.api.wallet.client``)
does the HTTP.

Every call is ``POST {wallet url}{path}`` with a JSON body, signed (``signing``), with
a request id; every call is idempotent by ``tx_id`` on the wallet's side (a replay
answers as the first time; the same id with a different body is ``tx_conflict``).
Amounts are integer minor units of ``currency``; multipliers integer hundredths.

==================  =====================  ===========================================
call                path                   body
==================  =====================  ===========================================
``session.verify``  ``/session/verify``    ``launch_token``
``balance``         ``/balance``           ``player_id``, ``currency``
``debit``           ``/debit``             ``tx_id``, ``player_id``, ``currency``,
                                           ``amount`` (> 0), ``round_id``, ``bet_id``
``credit``          ``/credit``            ``tx_id``, ``ref_tx_id`` (its debit),
                                           ``player_id``, ``currency``, ``amount``
                                           (≥ 0: 0 closes a lost bet), ``round_id``,
                                           ``bet_id``, ``multiplier`` (null for a loss)
``rollback``        ``/rollback``          ``tx_id``, ``ref_tx_id`` (the debit to undo),
                                           ``player_id``, ``currency``, ``amount`` (the
                                           debit's), ``round_id``, ``bet_id``
==================  =====================  ===========================================

An answer is ``{"status": "ok", …}`` (2xx) or ``{"status": "error", "code": …,
"message": …, "balance": …}`` (2xx or 4xx): a *refusal*, final. Everything else — no
answer within the timeout, a dropped connection, a 5xx, a body that is not one of those,
a bad signature — is *unknown*: the wallet may or may not have applied the call, so a
debit is rolled back and a credit or rollback is sent again (same ``tx_id``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from crashd.engine.bounds import MAX_AMOUNT
from crashd.engine.reasons import (
    INSUFFICIENT_FUNDS,
    WALLET_CURRENCY_MISMATCH,
    WALLET_LIMIT_REACHED,
    WALLET_PLAYER_BLOCKED,
    WALLET_REFUSED,
    WALLET_SELF_EXCLUDED,
    WALLET_SESSION_EXPIRED,
    WALLET_TX_CONFLICT,
    WALLET_UNKNOWN_PLAYER,
)

REQUEST_ID_HEADER = "Crashd-Request-Id"
"""A fresh id per HTTP attempt (the ``tx_id`` in the body is what stays the same)."""
TIMESTAMP_HEADER = "Crashd-Timestamp"
"""Unix seconds, part of what is signed."""
SIGNATURE_HEADER = "Crashd-Signature"
"""The signer's signature of (timestamp, path, body), e.g. 64 lowercase hex digits."""
PARTNER_HEADER = "Crashd-Partner"
"""The partner id the call is made for (not signed separately: the secret is per partner)."""

MAX_ANSWER_BYTES = 64 * 1024
"""Longest wallet answer read; a longer one is a broken answer (unknown)."""
MAX_LOGGED_BYTES = 4096
"""What the reconciliation log keeps of a request or an answer body."""


class Call(str, Enum):
    """The five calls of the contract (their wire names)."""

    SESSION_VERIFY = "session.verify"
    BALANCE = "balance"
    DEBIT = "debit"
    CREDIT = "credit"
    ROLLBACK = "rollback"

    @property
    def path(self) -> str:
        """Appended to the partner's wallet URL."""
        return "/" + self.value.replace(".", "/")


class Outcome(str, Enum):
    OK = "ok"
    """The wallet applied the call (or, for a replay, had applied it)."""
    REFUSED = "refused"
    """A definite no: nothing was applied, and asking again gives the same answer."""
    UNKNOWN = "unknown"
    """No usable answer: the call may or may not have been applied."""


WALLET_CODES: Mapping[str, str] = {
    "insufficient_funds": INSUFFICIENT_FUNDS,
    "session_expired": WALLET_SESSION_EXPIRED,
    "invalid_session": WALLET_SESSION_EXPIRED,
    "player_blocked": WALLET_PLAYER_BLOCKED,
    "limit_reached": WALLET_LIMIT_REACHED,
    "self_excluded": WALLET_SELF_EXCLUDED,
    "unknown_player": WALLET_UNKNOWN_PLAYER,
    "currency_mismatch": WALLET_CURRENCY_MISMATCH,
    "tx_conflict": WALLET_TX_CONFLICT,
}
"""The wallet's refusal codes (as the contract names them) → crashd's problem codes,
passed on to the partner and the page. Any other code is ``wallet_refused``, with the
wallet's own code beside it (``wallet_code``)."""

NOT_SENT = "not_sent"
"""The failure of a call whose deadline passed while it still waited in crashd for a
connection (before any connect or byte reached the wallet): unknown like a timeout —
a debit is still rolled back, to be safe — but it says nothing of the wallet, so the
circuit breaker takes no verdict from it, and the call log says it never left."""

UNKNOWN_TX = "unknown_tx"
"""A wallet's refusal of a rollback whose debit it never saw: that rollback succeeded
(there is nothing to undo), and the wallet must refuse that debit if it arrives later
(``tx_rolled_back``)."""


def problem_code(wallet_code: str) -> str:
    """crashd's code for a wallet's refusal code."""
    return WALLET_CODES.get(wallet_code, WALLET_REFUSED)


# -- requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One call, ready to sign and send: the path under the wallet's URL and the body
    (canonical JSON: compact, keys sorted, so a replay is byte for byte the same)."""

    call: Call
    body: Mapping[str, Any]
    tx_id: str | None = None
    player_id: str | None = None

    def encode(self) -> bytes:
        return json.dumps(dict(self.body), separators=(",", ":"), sort_keys=True).encode()

    def logged(self) -> str:
        """The body as the reconciliation log keeps it: a launch token is a credential,
        so only its hash prefix is kept."""
        body = dict(self.body)
        token = body.get("launch_token")
        if isinstance(token, str):
            body["launch_token"] = "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        token = body.get("session_token")
        if isinstance(token, str):
            body["session_token"] = "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        return json.dumps(body, separators=(",", ":"), sort_keys=True)[:MAX_LOGGED_BYTES]


def session_verify(launch_token: str) -> Request:
    return Request(Call.SESSION_VERIFY, {"launch_token": launch_token})


def balance(player_id: str, currency: str, session_token: str | None = None) -> Request:
    body: dict[str, Any] = {"player_id": player_id, "currency": currency}
    if session_token is not None:
        body["session_token"] = session_token
    return Request(Call.BALANCE, body, player_id=player_id)


def debit(
    tx_id: str,
    player_id: str,
    currency: str,
    amount: int,
    round_id: int,
    bet_id: str,
    session_token: str | None = None,
) -> Request:
    assert amount > 0
    body: dict[str, Any] = {
        "tx_id": tx_id,
        "player_id": player_id,
        "currency": currency,
        "amount": amount,
        "round_id": round_id,
        "bet_id": bet_id,
    }
    if session_token is not None:
        body["session_token"] = session_token
    return Request(Call.DEBIT, body, tx_id=tx_id, player_id=player_id)


def credit(
    tx_id: str,
    ref_tx_id: str,
    player_id: str,
    currency: str,
    amount: int,
    round_id: int,
    bet_id: str,
    multiplier: int | None,
) -> Request:
    assert amount >= 0
    return Request(
        Call.CREDIT,
        {
            "tx_id": tx_id,
            "ref_tx_id": ref_tx_id,
            "player_id": player_id,
            "currency": currency,
            "amount": amount,
            "round_id": round_id,
            "bet_id": bet_id,
            "multiplier": multiplier,
        },
        tx_id=tx_id,
        player_id=player_id,
    )


def rollback(
    tx_id: str,
    ref_tx_id: str,
    player_id: str,
    currency: str,
    amount: int,
    round_id: int,
    bet_id: str,
) -> Request:
    return Request(
        Call.ROLLBACK,
        {
            "tx_id": tx_id,
            "ref_tx_id": ref_tx_id,
            "player_id": player_id,
            "currency": currency,
            "amount": amount,
            "round_id": round_id,
            "bet_id": bet_id,
        },
        tx_id=tx_id,
        player_id=player_id,
    )


# -- answers -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What a call came to. ``code``: the wallet's refusal code (``refused``), or why
    the answer is unusable (``unknown``: ``timeout``, ``connect_error``, ``http_503``,
    ``bad_body``, ``bad_signature``…)."""

    outcome: Outcome
    code: str | None = None
    message: str = ""
    balance: int | None = None
    wallet_tx_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def problem(self) -> str | None:
        """crashd's problem code for a refusal."""
        return problem_code(self.code) if self.outcome is Outcome.REFUSED and self.code else None


def unknown(code: str, message: str = "") -> Answer:
    return Answer(Outcome.UNKNOWN, code, message)


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int else None


def interpret(request: Request, status: int, body: bytes, signature_ok: bool) -> Answer:
    """Read the wallet's answer to ``request`` (HTTP ``status``, raw ``body``, whether
    its signature checked out)."""
    if not signature_ok:
        return unknown("bad_signature", "the answer's signature does not match")
    if status >= 500:
        return unknown(f"http_{status}", f"the wallet answered HTTP {status}")
    if len(body) > MAX_ANSWER_BYTES:
        return unknown("bad_body", "the answer is too long")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return unknown("bad_body", f"HTTP {status} without a JSON body")
    if not isinstance(data, dict):
        return unknown("bad_body", "the answer is not a JSON object")
    balance = _int_or_none(data.get("balance"))
    verdict = data.get("status")
    if verdict == "ok" and 200 <= status < 300:
        echoed = data.get("tx_id")
        if request.tx_id is not None and echoed is not None and echoed != request.tx_id:
            return unknown("bad_body", "the answer names another transaction")
        wallet_tx = data.get("wallet_tx_id")
        return Answer(
            Outcome.OK,
            balance=balance,
            wallet_tx_id=wallet_tx if isinstance(wallet_tx, str) else None,
            data=data,
        )
    code = data.get("code")
    if verdict == "error" and isinstance(code, str) and code and 200 <= status < 500:
        message = data.get("message")
        text = message if isinstance(message, str) else ""
        if request.call is Call.ROLLBACK and code == UNKNOWN_TX:
            # Nothing to undo: the rollback did what it had to.
            return Answer(Outcome.OK, balance=balance, message=text, data=data)
        return Answer(Outcome.REFUSED, code[:64], text[:500], balance, data=data)
    return unknown("bad_body", f"HTTP {status} with an answer that is neither ok nor an error")


@dataclass(frozen=True, slots=True)
class WalletLimits:
    """The limits a wallet's ``session.verify`` may give for the player (optional, in
    ``"limits": {"max_stake": …}``): crashd refuses a bet above them before the wallet
    is asked (``wallet_stake_too_large``). ``None``: the wallet set none. Other members
    are ignored, and so is a value that is not an integer in 1..``MAX_AMOUNT``."""

    max_stake: int | None = None

    def to_json(self) -> dict[str, int | None]:
        return {"max_stake": self.max_stake}


NO_LIMITS = WalletLimits()


def limits_of(answer: Answer) -> WalletLimits:
    """The limits of an ok ``session.verify`` answer (``NO_LIMITS`` if it gives none)."""
    raw = answer.data.get("limits")
    if not isinstance(raw, dict):
        return NO_LIMITS
    max_stake = raw.get("max_stake")
    if type(max_stake) is not int or not 1 <= max_stake <= MAX_AMOUNT:
        return NO_LIMITS
    return WalletLimits(max_stake=max_stake)


def session_of(answer: Answer) -> tuple[str, str, int | None, str | None] | None:
    """(player id, currency, balance, session token) of an ok ``session.verify``, or
    ``None`` if the wallet's answer lacks the player or the currency."""
    player = answer.data.get("player_id")
    currency = answer.data.get("currency")
    if not (isinstance(player, str) and player and isinstance(currency, str) and currency):
        return None
    token = answer.data.get("session_token")
    return player, currency, answer.balance, token if isinstance(token, str) else None


# -- transaction ids -----------------------------------------------------------------

DEBIT_PREFIX = "dbt_"
CREDIT_PREFIX = "crd_"
ROLLBACK_PREFIX = "rbk_"


def debit_id(ticket_id: str) -> str:
    """A bet's debit: derived from its ticket (``t_<hex>``), so a retried bet request
    names the same debit."""
    return DEBIT_PREFIX + ticket_id.removeprefix("t_")


def credit_id(debit_tx_id: str) -> str:
    """The one credit that may close a debit."""
    return CREDIT_PREFIX + debit_tx_id.removeprefix(DEBIT_PREFIX)


def rollback_id(debit_tx_id: str) -> str:
    """The one rollback that may close a debit."""
    return ROLLBACK_PREFIX + debit_tx_id.removeprefix(DEBIT_PREFIX)
