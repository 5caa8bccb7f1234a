"""A realistic ledger load, run as a child process by tests/ledger/test_kill.py.

    python tests/support/ledger_load_child.py DB_PATH SEED

Opens the ledger (synchronous=FULL, recovery on), prints ``RECOVERED {json}``, then
runs until killed: PSP deposits and withdrawals, bettors reserving and confirming bets
for the open round or the next one, manual cashouts while a round runs, and a round
driver that starts rounds (consecutive game numbers) and settles each in bulk. Every
acknowledgement is printed as one line ``ACK {json}`` *after* the call returned, i.e.
after its transaction committed: the parent checks each of them survived the kill.
"""

from __future__ import annotations

import json
import random
import sys

import trio

from crashd.engine.ledger import open_ledger
from crashd.engine.ledger.model import LedgerError, Result
from crashd.engine.ledger.writer import Ledger

USERS = [f"user{i}" for i in range(12)]
HASH = "c0ffee" * 10 + "c0ff"


def ack(result: Result, **extra: object) -> None:
    data = json.loads(result.to_json())
    data.update(extra)
    sys.stdout.write("ACK " + json.dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Load:
    def __init__(self, ledger: Ledger, rng: random.Random, boot: int, next_round: int) -> None:
        self.ledger = ledger
        self.rng = rng
        self.boot = boot
        self.n = 0
        self.round_id: int | None = None
        self.next_round = next_round
        self.round_bets: list[tuple[str, int | None]] = []
        self.cashed: set[str] = set()

    def oid(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.boot}-{self.n}"

    async def depositor(self) -> None:
        while True:
            user = self.rng.choice(USERS)
            env = self.rng.choice(["production", "sandbox"])
            r = await self.ledger.psp_deposit(
                self.oid("dep"),
                environment=env,
                partner_id="p",
                user_id=user,
                amount=self.rng.randint(500, 5000),
            )
            ack(r, key=f"psp:{env}:{r.op_id}")
            if self.rng.random() < 0.3:
                key = self.oid("wd")
                try:
                    r = await self.ledger.psp_withdrawal(
                        key,
                        environment=env,
                        partner_id="p",
                        user_id=user,
                        amount=self.rng.randint(100, 3000),
                    )
                    ack(r, key=f"psp:{env}:{r.op_id}")
                except LedgerError:
                    pass
            await trio.sleep(self.rng.random() * 0.01)

    async def bettor(self) -> None:
        while True:
            user = self.rng.choice(USERS)
            env = self.rng.choice(["production", "sandbox"])
            hold = self.oid("hold")
            try:
                r = await self.ledger.bet_reserve(
                    self.oid("res"),
                    environment=env,
                    partner_id="p",
                    user_id=user,
                    hold_id=hold,
                    amount=self.rng.randint(10, 400),
                    ttl_ms=5000,
                )
                ack(r, key=r.op_id)
                ticket = self.oid("ticket")
                auto = self.rng.choice([None, 150, 200, 500])
                c = await self.ledger.bet_confirm(
                    self.oid("conf"),
                    environment=env,
                    partner_id="p",
                    user_id=user,
                    hold_id=hold,
                    ticket_id=ticket,
                    auto_cashout=auto,
                    round_id=self.round_id,
                )
                ack(c, key=c.op_id)
                if c.round_id is not None and c.round_id == self.round_id and auto is None:
                    self.round_bets.append((ticket, c.round_id))
            except LedgerError:
                pass
            await trio.sleep(self.rng.random() * 0.005)

    async def casher(self) -> None:
        """Manual cashouts while the round runs (the engine would price them by clock)."""
        while True:
            await trio.sleep(0.002)
            if not self.round_bets or self.round_id is None:
                continue
            ticket, rid = self.round_bets.pop(self.rng.randrange(len(self.round_bets)))
            if rid != self.round_id:
                continue
            try:
                r = await self.ledger.settle_win(
                    self.oid("cash"), ticket_id=ticket, multiplier=self.rng.randint(100, 180)
                )
                ack(r, key=r.op_id)
                self.cashed.add(ticket)
            except LedgerError:
                pass

    async def rounds(self) -> None:
        while True:
            rid = self.next_round
            r = await self.ledger.round_start(self.oid("start"), round_id=rid)
            ack(r, key=r.op_id)
            self.round_id = rid
            self.next_round = rid + 1
            await trio.sleep(self.rng.uniform(0.02, 0.15))
            crash = self.rng.choice([100, 120, 180, 250, 600])
            self.round_id = None  # later bets wait for the next round
            self.round_bets = []
            # Wins in bulk: auto targets at or below the crash point.
            bets = await self.ledger.round_bets(rid, unsettled_only=True)
            wins = tuple(
                (b.ticket_id, b.auto_cashout)
                for b in bets
                if b.auto_cashout is not None and b.auto_cashout <= crash
            )
            s = await self.ledger.round_settle(
                self.oid("settle"), round_id=rid, crash_point=crash, game_hash=HASH, wins=wins
            )
            ack(s, key=s.op_id)
            await trio.sleep(self.rng.uniform(0.0, 0.02))


async def main(db: str, seed: int) -> None:
    async with open_ledger(db, synchronous="FULL", sweep_interval_s=0.05) as ledger:
        rec = ledger.recovery
        assert rec is not None
        sys.stdout.write("RECOVERED " + rec.to_json() + "\n")
        sys.stdout.flush()
        load = Load(
            ledger, random.Random(seed * 1_000_003 + rec.seq), rec.seq, rec.highest_round_id + 1
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.rounds)
            nursery.start_soon(load.casher)
            for _ in range(3):
                nursery.start_soon(load.depositor)
            for _ in range(12):
                nursery.start_soon(load.bettor)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
