"""The leader lease on PostgreSQL: one writer, a fenced deposed leader, a standby that
takes over and runs recovery once. Real PostgreSQL (skipped with the reason where none
can be had), no mocks: a "partition" is the lease session terminated on the server."""

from __future__ import annotations

import pytest
import trio

from crashd.engine.ledger import LedgerInUse, open_ledger
from crashd.engine.ledger.model import LedgerClosed, LedgerFenced
from support.postgres import Backend

P = dict(environment="production", partner_id="acme")


def lease_pids(pg: Backend) -> list[int]:
    conn = pg.connect()
    try:
        return [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'crashd leader lease' "
                "AND datname = current_database()"
            )
        ]
    finally:
        conn.close()


def term(pg: Backend) -> int:
    conn = pg.connect()
    try:
        return int(conn.execute("SELECT term FROM leader").fetchone()[0])
    finally:
        conn.close()


def flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in flatten(sub)]
    return [exc]


async def test_a_second_writer_is_refused_while_the_first_holds_the_lease(pg: Backend) -> None:
    async with open_ledger(pg.target, sweep_interval_s=None) as ledger:
        await ledger.psp_deposit("d1", user_id="u", amount=10, **P)
        assert term(pg) == 1
        with pytest.raises(LedgerInUse, match="holds the leader lease"):
            async with open_ledger(pg.target, sweep_interval_s=None):
                pass
        assert (await ledger.balance(user_id="u", **P)).available == 10
    # Released on close: the next writer gets a new term.
    async with open_ledger(pg.target, sweep_interval_s=None) as ledger:
        assert term(pg) == 2
        assert (await ledger.balance(user_id="u", **P)).available == 10


async def test_a_deposed_leader_commits_nothing_more_and_stops(pg: Backend) -> None:
    """The first leader loses its lease session without noticing (terminated on the
    server, as a partition would); a second engine takes the lease and bumps the term.
    The first one's next group is refused by the fence inside its transaction, its
    callers get ledger_unavailable, its writer stops with LedgerFenced, and nothing of
    that group is in the ledger."""
    from crashd.engine.ledger.lease import Lease

    fenced: list[BaseException] = []
    outcome: list[str] = []
    try:
        async with open_ledger(pg.target, sweep_interval_s=None) as first:
            await first.psp_deposit("before", user_id="u", amount=10, **P)
            [pid] = lease_pids(pg)
            conn = pg.connect()
            conn.execute("SELECT pg_terminate_backend(?)", (pid,))
            conn.close()
            second = await trio.to_thread.run_sync(Lease.take, str(pg.target))
            try:
                assert second.term == 2
                try:
                    await first.psp_deposit("after", user_id="u", amount=99, **P)
                    outcome.append("committed")
                except LedgerClosed:
                    outcome.append("unavailable")
                await trio.sleep_forever()  # the writer's failure ends the scope
            finally:
                second.release()
    except BaseException as exc:
        fenced = [e for e in flatten(exc) if isinstance(e, LedgerFenced)]
        if not fenced:
            raise
    assert outcome == ["unavailable"]
    assert fenced, "the deposed writer stops with LedgerFenced"
    conn = pg.connect()
    try:
        keys = [r[0] for r in conn.execute("SELECT key FROM ops ORDER BY id")]
    finally:
        conn.close()
    assert any(k.endswith(":before") for k in keys)
    assert not any(k.endswith(":after") for k in keys), "the fenced group left nothing"


async def test_the_lease_keeper_stops_a_leader_whose_term_moved_on(pg: Backend) -> None:
    """Without any op to fence, the keeper's check (every second) notices the lost
    session and ends the ledger."""
    with pytest.raises(BaseException) as raised:
        async with open_ledger(pg.target, sweep_interval_s=None):
            [pid] = lease_pids(pg)
            conn = pg.connect()
            conn.execute("SELECT pg_terminate_backend(?)", (pid,))
            conn.close()
            with trio.fail_after(10):
                await trio.sleep_forever()
    assert any(isinstance(e, LedgerFenced) for e in flatten(raised.value))


async def test_a_standby_takes_over_and_recovers_once(pg: Backend) -> None:
    """A standby waits while the leader holds the lease; when the leader is gone it
    takes the lease (a new term), runs recovery exactly once (the leader's open round
    voided, its unsettled stake refunded), and serves."""
    from crashd.engine.ledger.lease import wait_for_lease

    waited: list[str] = []
    leader_done = trio.Event()
    async with trio.open_nursery() as nursery:
        async with open_ledger(pg.target, sweep_interval_s=None) as leader:
            await leader.psp_deposit("d", user_id="u", amount=1000, **P)
            await leader.round_start("s1", round_id=1)
            await leader.bet_reserve("r", user_id="u", hold_id="h", amount=300, ttl_ms=60_000, **P)
            await leader.bet_confirm("c", user_id="u", hold_id="h", ticket_id="t", round_id=1, **P)

            async def standby() -> None:
                lease = await wait_for_lease(str(pg.target), poll_s=0.05, on_wait=waited.append)
                assert leader_done.is_set(), "the lease is not granted while the leader lives"
                try:
                    async with open_ledger(pg.target, sweep_interval_s=None, lease=lease) as new:
                        rec = new.recovery
                        assert rec is not None
                        assert (rec.rounds_voided, rec.bets_refunded, rec.refunded_amount) == (
                            1,
                            1,
                            300,
                        )
                        assert (await new.balance(user_id="u", **P)).available == 1000
                        assert (await new.audit()).ok
                finally:
                    lease.release()

            nursery.start_soon(standby)
            with trio.fail_after(10):
                while not waited:
                    await trio.sleep(0.05)
            leader_done.set()  # the leader "dies" with its round open
    assert term(pg) == 2
    # A third start finds nothing left to recover.
    async with open_ledger(pg.target, sweep_interval_s=None) as again:
        assert again.recovery is not None and again.recovery.rounds_voided == 0
    assert term(pg) == 3
