"""A Hypothesis state machine against a real ``crashd serve`` and a real ``crashd wallet
mock``, both child processes on 127.0.0.1: it bets, cashes out, lets rounds crash,
injects wallet faults (5xx, hangs, answers dropped after commit, duplicate deliveries,
refusals, outages, latency), heals them, and SIGKILLs and restarts crashd.

After every step, from both books (the mock's SQLite and crashd's ledger, read-only):

* **money is conserved across the two books**: the wallet's money plus crashd's (the
  players' owed balances, escrow, the house) equals what the wallet started with, plus
  what is provably in transit (a debit the wallet applied that crashd has not
  confirmed and not yet rolled back; a credit or rollback the wallet applied whose
  answer crashd has not recorded yet) — computed call by call by joining the books;
* **every debit ends credited or rolled back exactly once**: never both, never twice
  (crashd: one closing per debit; the wallet: one closing per debit, and no recorded
  contract violation — a rollback after a credit, a credit after a rollback);
* **no bet plays without a confirmed debit**: every bet in a round is a debit crashd
  recorded ``ok`` and the wallet applied and did not roll back;
* every acknowledged bet and cash-out is in crashd's ledger as acknowledged, and the
  ledger's audit holds.

At the end the wallet is healed and **the outbox must drain**: nothing pending, every
debit closed, the two books equal to the unit. ``CRASHD_WALLET_EXAMPLES`` (default 4)
and ``CRASHD_WALLET_STEPS`` (default 24) run more.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from crashd.api.security.keys import KeyStore
from crashd.api.security.signing import sign_request
from crashd.engine.ledger.store import audit
from support.game import short_rounds_chain
from support.servers import PYTHON, REPO
from support.wallet import CURRENCY, PARTNER, WALLET_SECRET

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("CRASHD_WALLET_EXAMPLES", "4"))
STEPS = int(os.environ.get("CRASHD_WALLET_STEPS", "24"))
PLAYERS = ("p0", "p1", "p2")
FUNDING = 100_000
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _read_line(proc: subprocess.Popen[bytes], marker: str, timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            raise AssertionError(f"the child exited before printing {marker!r}")
        if marker in line:
            return line.split(marker, 1)[1].strip()
    raise AssertionError(f"no {marker!r} within {timeout} s")


class WalletMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        d = Path(self.dir.name)
        self.database = d / "crashd.sqlite3"
        self.chain = d / "chain.json"
        short_rounds_chain(self.chain)
        self.mock_db = d / "mock.sqlite3"
        self.mock = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "crashd.api",
                "wallet",
                "mock",
                "--port",
                "0",
                "--database",
                str(self.mock_db),
                "--secret",
                WALLET_SECRET,
                "--currency",
                CURRENCY,
                "--hang-s",
                "1",
                "--seed",
                "7",
                *(f"--fund={p}={FUNDING}" for p in PLAYERS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        self.mock_url = _read_line(self.mock, "listening on ")
        self.admin = httpx.Client(base_url=self.mock_url.removesuffix("/wallet"), timeout=10)
        wallets = d / "wallets.toml"
        wallets.write_text(
            f'[partners.{PARTNER}]\nurl = "{self.mock_url}"\nsecret = "{WALLET_SECRET}"\n'
            f'currency = "{CURRENCY}"\n'
        )
        os.chmod(wallets, 0o600)
        self.args = [
            PYTHON, "-m", "crashd.api", "serve", "--port", "0", "--feed-port", "0",
            "--database", str(self.database), "--chain-file", str(self.chain),
            "--wallets-file", str(wallets), "--betting-ms", "500", "--pause-ms", "150",
            "--stop-wait-s", "1", "--log-level", "warning", "--wallet-timeout-ms", "300",
            "--wallet-breaker-failures", "4", "--wallet-breaker-cooldown-s", "0.3",
            "--max-bets-per-user", "3",
        ]  # fmt: skip
        self.server: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None
        self.start()
        store = KeyStore(self.database)
        try:
            created = store.create(
                "sandbox", "read:game_state,read:balance,write:bet", partner_id=PARTNER
            )
        finally:
            store.close()
        self.key, self.signing = created.secret, created.signing_secret
        self.acked: dict[str, int] = {}  # ticket -> stake
        self.cashed: dict[str, int] = {}  # ticket -> payout
        self.kills = 0
        self.steps: dict[str, int] = {}

    # -- plumbing --------------------------------------------------------------------

    def start(self) -> None:
        self.server = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV
        )
        url = _read_line(self.server, "listening on ")
        self.client = httpx.Client(base_url=url, timeout=10)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response | None:
        assert self.client is not None
        raw = json.dumps(body).encode()
        headers = {
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            **sign_request(self.signing, "POST", path, raw, uuid.uuid4().hex, int(time.time())),
        }
        try:
            return self.client.post(path, content=raw, headers=headers)
        except httpx.TransportError:
            return None

    def state(self) -> dict[str, Any]:
        assert self.client is not None
        r = self.client.get("/api/v1/game/state", headers={"Authorization": f"Bearer {self.key}"})
        return r.json()  # type: ignore[no-any-return]

    def faults(self, **faults: Any) -> None:
        r = self.admin.post("/admin/faults", json=faults)
        assert r.status_code == 200, r.text

    def heal(self) -> None:
        self.faults(error_rate=0, timeout_rate=0, drop_rate=0, duplicate_rate=0,
                    insufficient_rate=0, outages=[], latency_ms=0, jitter_ms=0)  # fmt: skip

    def teardown(self) -> None:
        try:
            if self.server is not None and self.server.poll() is None:
                self.heal()
                self.wait_settled()
                self.wait_drained()
                self.check(final=True)
                self.report()
        finally:
            for proc in (self.server, self.mock):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                if proc is not None and proc.stdout is not None:
                    proc.stdout.close()
            if self.client is not None:
                self.client.close()
            self.admin.close()
            self.dir.cleanup()

    def report(self) -> None:
        """What the example did (pytest -s shows it)."""
        with self.crashd() as c:
            states = c.execute(
                "SELECT kind, state, count(*) FROM wallet_txs GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            codes = c.execute(
                "SELECT code, count(*) FROM wallet_calls WHERE outcome != 'ok' GROUP BY 1"
            ).fetchall()
        print(
            f"\nwallet machine: {len(self.acked)} bets acknowledged, {len(self.cashed)} cash-outs,"
            f" {self.kills} kills; faults {self.steps}; transactions {states}; failed calls {codes}"
        )

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Every bet has its outcome (the rounds they are in have crashed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.crashd() as conn:
                open_bets = conn.execute(
                    "SELECT count(*) FROM bets WHERE outcome IS NULL"
                ).fetchone()[0]
            if open_bets == 0:
                return
            time.sleep(0.1)
        raise AssertionError("bets still unsettled")

    def wait_drained(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.crashd() as conn:
                pending = conn.execute(
                    "SELECT count(*) FROM wallet_txs WHERE state = 'pending'"
                ).fetchone()[0]
            if pending == 0:
                return
            time.sleep(0.1)
        raise AssertionError("the outbox did not drain after the wallet recovered")

    def crashd(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)

    def mock_book(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.mock_db}?mode=ro", uri=True, timeout=30)

    # -- rules -----------------------------------------------------------------------

    @initialize(stakes=st.lists(st.integers(1, 3000), min_size=len(PLAYERS), max_size=len(PLAYERS)))
    def opening_bets(self, stakes: list[int]) -> None:
        """Every example starts with money in play (bets for the current or next round)."""
        for user, stake in zip(PLAYERS, stakes, strict=True):
            self.place(user, stake, None)

    @rule(
        user=st.sampled_from(PLAYERS),
        stake=st.integers(1, 3000),
        auto=st.sampled_from([None, None, 101, 110, 150]),
    )
    def bet(self, user: str, stake: int, auto: int | None) -> None:
        self.place(user, stake, auto)

    def place(self, user: str, stake: int, auto: int | None) -> None:
        body: dict[str, Any] = {"user_id": user, "amount": stake}
        if auto is not None:
            body["auto_cashout"] = auto
        r = self.post("/api/v1/bets", body)
        if r is not None and r.status_code == 201:
            self.acked[r.json()["ticket_id"]] = stake

    @precondition(lambda self: bool(self.acked))
    @rule(data=st.data())
    def cash_out(self, data: st.DataObject) -> None:
        ticket = data.draw(st.sampled_from(sorted(self.acked)))
        with self.crashd() as conn:
            row = conn.execute(
                "SELECT a.user_id FROM bets b JOIN accounts a ON a.id = b.account WHERE b.ticket_id = ?",
                (ticket,),
            ).fetchone()
        assert row is not None, f"acknowledged bet {ticket} is not in the ledger"
        r = self.post(f"/api/v1/bets/{ticket}/cashout", {"user_id": row[0]})
        if r is not None and r.status_code == 200 and not r.headers.get("Idempotent-Replayed"):
            self.cashed[ticket] = r.json()["payout"]

    @rule(
        kind=st.sampled_from(
            [
                "error_rate",
                "timeout_rate",
                "drop_rate",
                "duplicate_rate",
                "insufficient_rate",
                "outage",
                "latency_ms",
                "heal",
            ]
        ),
        rate=st.sampled_from([0.3, 1.0]),
    )
    def fault(self, kind: str, rate: float) -> None:
        self.steps[f"fault:{kind}"] = self.steps.get(f"fault:{kind}", 0) + 1
        if kind == "heal":
            self.heal()
        elif kind == "outage":
            now = time.time()
            self.faults(outages=[[now, now + 2 * rate]])
        elif kind == "latency_ms":
            self.faults(latency_ms=200 * rate, jitter_ms=50)
        else:
            self.faults(**{kind: rate})

    @rule(seconds=st.sampled_from([0.2, 0.5, 1.0]))
    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    @precondition(lambda self: self.kills < 3)
    @rule()
    def kill_and_restart(self) -> None:
        assert self.server is not None and self.client is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()
        assert self.server.stdout is not None
        self.server.stdout.close()
        self.client.close()
        self.kills += 1
        self.start()

    # -- the invariants ----------------------------------------------------------------

    @invariant()
    def books(self) -> None:
        self.check(final=False)

    def check(self, final: bool) -> None:
        with self.mock_book() as m:
            balances = dict(m.execute("SELECT player_id, balance FROM players").fetchall())
            applied = {
                tx: (call, ref, amount)
                for tx, call, ref, amount in m.execute(
                    "SELECT tx_id, call, ref_tx_id, amount FROM txs WHERE applied = 1"
                )
            }
            closed = dict(m.execute("SELECT debit_tx_id, how FROM closed").fetchall())
            violations = m.execute("SELECT tx_id, what FROM violations").fetchall()
        with self.crashd() as c:
            report = audit(c)
            txs = {
                tx: (kind, state, amount, ref)
                for tx, kind, state, amount, ref in c.execute(
                    "SELECT tx_id, kind, state, amount, ref_tx_id FROM wallet_txs"
                )
            }
            wallet_account = c.execute(
                "SELECT coalesce(sum(posted), 0) FROM accounts WHERE kind = 'wallet'"
            ).fetchone()[0]
            crashd_money = c.execute(
                "SELECT coalesce(sum(posted), 0) FROM accounts WHERE kind != 'wallet'"
            ).fetchone()[0]
            bets = c.execute(
                "SELECT ticket_id, stake, round_id, outcome, payout FROM bets"
            ).fetchall()
            closings = c.execute(
                "SELECT ref_tx_id, count(*) FROM wallet_txs WHERE ref_tx_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1"
            ).fetchall()
        assert violations == [], violations
        assert report.ok, report.problems
        assert closings == []
        debits = {tx: v for tx, v in applied.items() if v[0] == "debit"}
        # Money across both books, call by call.
        in_transit = 0
        for tx, (_, _, amount) in debits.items():
            mine = txs.get(tx)
            undone = closed.get(tx) == "rollback"
            if (mine is None or mine[1] != "ok") and not undone:
                in_transit -= amount  # the wallet took it; crashd holds nothing for it
            if mine is not None and mine[1] != "ok" and undone:
                pass  # taken and given back by the wallet: nothing in either book
        for tx, (call, ref, amount) in applied.items():
            mine = txs.get(tx)
            delivered = mine is not None and mine[1] in ("ok", "resolved")
            if call == "credit" and not delivered:
                in_transit += amount  # the wallet paid it; crashd still owes it
            if call == "rollback" and not delivered and ref in debits:
                debit = txs.get(ref)
                if debit is not None and debit[1] == "ok":
                    in_transit += debits[ref][2]  # refunded by the wallet; crashd still holds it
        for tx, (kind, state, _, _) in txs.items():
            if kind == "debit" and state == "ok":
                assert tx in debits, f"crashd confirmed {tx}, the wallet never applied it"
            if kind != "debit" and state == "ok":
                assert tx in applied, f"crashd recorded {tx} delivered, the wallet never applied it"
        wallet_money = sum(balances.values())
        assert wallet_money + crashd_money == FUNDING * len(PLAYERS) + in_transit
        assert crashd_money == -wallet_account
        # No bet plays without a confirmed debit the wallet kept.
        for ticket, stake, round_id, outcome, _payout in bets:
            debit = "dbt_" + ticket.removeprefix("t_")
            assert txs[debit][1] == "ok" and txs[debit][2] == stake
            if round_id is not None and outcome in (None, "won", "lost"):
                assert debit in debits and closed.get(debit) != "rollback", ticket
        recorded = {t: (s, o, p) for t, s, _r, o, p in bets}
        for ticket, stake in self.acked.items():
            assert recorded[ticket][0] == stake, ticket
        for ticket, payout in self.cashed.items():
            assert recorded[ticket][1:] == ("won", payout), ticket
        if final:
            assert in_transit == 0
            for tx, (kind, state, _, _) in txs.items():
                assert state not in ("pending",), tx
                if kind == "debit" and state in ("ok", "cancelled"):
                    closing = [t for t, v in txs.items() if v[3] == tx]
                    assert len(closing) == 1 and txs[closing[0]][1] == "ok", tx
            for tx in debits:
                assert tx in closed, f"the wallet's debit {tx} was never closed"
            with self.crashd() as c:
                owed = c.execute(
                    "SELECT coalesce(sum(posted), 0) FROM accounts WHERE kind = 'player'"
                ).fetchone()[0]
            assert owed == 0, "every win and refund reached the wallet"


# No shrinking: two real processes and a clock do not replay a step the same way, so a
# shrunk example would be another run; the failing one is reported as it ran (its steps
# are printed by Hypothesis), and the database of examples is not kept.
WalletMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    database=None,
    suppress_health_check=list(HealthCheck),
)
TestWalletMachine = WalletMachine.TestCase
