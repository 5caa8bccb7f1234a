"""Reconciliation: a wallet transaction, a call, and one day's summary, as the API
and ``crashd wallet`` show them (one shape for both)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from crashd.api.wire import iso_ms
from crashd.engine.ledger import walletstore
from crashd.engine.ledger.wallet import WalletCall, WalletTx

TX_FIELDS = (
    "tx_id",
    "kind",
    "state",
    "code",
    "user_id",
    "currency",
    "amount",
    "multiplier",
    "ticket_id",
    "round_id",
    "ref_tx_id",
    "attempts",
    "wallet_tx_id",
    "balance",
    "created_at",
    "updated_at",
    "next_at",
    "give_up_at",
    "note",
)
CALL_FIELDS = (
    "id",
    "at",
    "call",
    "tx_id",
    "user_id",
    "request_id",
    "status",
    "outcome",
    "code",
    "duration_ms",
    "request",
    "response",
)


def tx_body(tx: WalletTx) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(tx, name) for name in TX_FIELDS}
    for name in ("created_at", "updated_at", "next_at", "give_up_at"):
        out[name] = iso_ms(out[name])
    return out


def call_body(row_id: int, call: WalletCall) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(call, name, None) for name in CALL_FIELDS}
    out["id"] = row_id
    out["at"] = iso_ms(call.at)
    return out


def daily_summary(conn: Any, environment: str, partner_id: str, day: date) -> dict[str, Any]:
    """One UTC day of a partner's wallet transactions (created that day): per kind the
    count and amount in each state, and what is pending and failed among them."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    end = start + 24 * 3600 * 1000
    by_kind = walletstore.summary(conn, environment, partner_id, start, end)
    out: dict[str, Any] = {"day": day.isoformat()}
    for kind, name in (("debit", "debits"), ("credit", "credits"), ("rollback", "rollbacks")):
        stats = by_kind.get(kind, {})
        out[name] = {
            "count": sum(v for k, v in stats.items() if k.endswith("_count")),
            "amount": sum(
                v
                for k, v in stats.items()
                if k.endswith("_amount") and not k.startswith(("refused", "cancelled"))
            ),
            **stats,
        }
    for state in ("pending", "failed"):
        out[state] = {
            "count": sum(by_kind.get(k, {}).get(f"{state}_count", 0) for k in by_kind),
            "amount": sum(by_kind.get(k, {}).get(f"{state}_amount", 0) for k in by_kind),
        }
    return out
