"""The notary: verifiable settlement for a running game (docs/fairness.md).

It holds the server's signing key and player pseudonyms, and does three things, none
of them on the tick path:

* as an engine observer it records each round's events (``settlement.recorder``: one
  append per event) and, when betting closes, queues the round's **seal** as a ledger op
  whose document is built and signed on the writer's thread; once committed, the seal
  is announced (``on_seal``: the feed) and served;
* as the ledger's ``Settlement`` it writes each settled round's **transcript** in the
  transaction of the settlement (crash, void, or start-up recovery), chained to the one
  before and signed;
* it signs the **receipts** of accepted bets, target changes and cash-outs, from the
  engine's decision, while the reply that carries them is rendered on the writer's
  thread (``crashd.api.rest.routes.bets``).

The signing key and the pseudonym secret come from ``crashd.engine.signingkey``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .driver import Engine
from .ledger import LedgerError
from .ledger.model import Round
from .ledger.txn import Txn
from .ledger.writer import Ledger, Pending
from .round.config import RoundConfig
from .round.events import AutoCashoutChanged, BetAccepted, CashedOut, Event, RunningStarted
from .settlement.canonical import canonical
from .settlement.documents import (
    TARGET,
    Pseudonyms,
    Signer,
    bet_receipt,
    cashout_receipt,
    doc_hash,
)
from .settlement.recorder import Recorder, build_record
from .settlement.recovered import from_ledger
from .settlement.transcript import fairness_of, from_record, rules_of

log = logging.getLogger(__name__)

SealListener = Callable[[int, dict[str, Any]], None]
ChainOf = Callable[[int], tuple[str, str, str] | None]
"""Round id → (salt, terminating hash, encoding) of the hash chain it was played from."""


class Notary:
    def __init__(
        self,
        signer: Signer,
        pseudonyms: Pseudonyms,
        *,
        environment: str,
        salt: str,
        terminating_hash: str,
        chain_encoding: str,
        config: RoundConfig,
    ) -> None:
        self.signer = signer
        self.pseudonyms = pseudonyms
        self.environment = environment
        self.salt = salt
        self.terminating_hash = terminating_hash
        self.chain_encoding = chain_encoding
        self.chain_of: ChainOf | None = None
        """Set once chains rotate (``crashd.api.ops.chains``): each round's transcript
        names the chain and salt it was played from, not the first chain's."""
        self.rules = rules_of(config)
        self.recorder = Recorder()
        self.on_seal: SealListener | None = None
        """Told of each seal once it is committed (the feed publishes it)."""
        self._epoch_offset: Callable[[], int] = lambda: 0
        self._ledger: Ledger | None = None
        self._seals_send, self._seals_recv = trio.open_memory_channel[
            tuple[int, Pending, list[dict[str, Any]]]
        ](float("inf"))
        self.transcripts_written = 0

    # -- wiring ---------------------------------------------------------------------------

    def attach(self, engine: Engine, ledger: Ledger, epoch_offset: Callable[[], int]) -> None:
        """Observe ``engine`` (after the game's own observer, so that its ops are queued
        first); ``epoch_offset()`` is the Unix ms of engine instant 0."""
        self._ledger = ledger
        self._epoch_offset = epoch_offset
        engine.add_observer(self.observe)

    def epoch(self, engine_ms: int) -> int:
        return self._epoch_offset() + engine_ms

    async def run(self) -> None:
        """Announce each seal once its op committed (in order), until the game ends."""
        async for round_id, pending, built in self._seals_recv:
            try:
                await pending.wait()
            except LedgerError as err:
                log.warning("round %d: the seal was not kept (%s)", round_id, err.code)
                continue
            if built and self.on_seal is not None:
                self.on_seal(round_id, built[0])

    def close(self) -> None:
        self._seals_send.close()

    # -- the tick path: record, and queue the seal when betting closes ---------------------

    def observe(self, events: Sequence[Event]) -> None:
        self.recorder.observe(events)
        for event in events:
            if type(event) is RunningStarted:
                self._queue_seal(event.round_id)

    def _queue_seal(self, round_id: int) -> None:
        ledger = self._ledger
        events = self.recorder.events(round_id)
        if ledger is None or events is None:
            return
        upto = len(events)  # the seal is of the bets in play now, whatever follows
        built: list[dict[str, Any]] = []

        def document() -> tuple[str, str]:
            record = build_record(round_id, events[:upto], self.epoch, self.pseudonyms.of)
            body = record.seal()
            assert body is not None
            seal = self.signer.sign(body)
            built.append(seal)
            leaves = [b.leaf(round_id) for b in record.sealed]
            return canonical(seal).decode(), canonical(leaves).decode()

        try:
            pending = ledger.seal_round(round_id, document)
        except LedgerError:
            return  # the ledger is closing: the round will be voided by recovery
        self._seals_send.send_nowait((round_id, pending, built))

    # -- the writer's thread: transcripts -------------------------------------------------

    def rounds_settled(self, txn: Txn, rounds: list[Round], now: int) -> None:
        for rnd in rounds:
            last = txn.last_transcript()
            prev = last[1] if last is not None else None
            events = self.recorder.take(rnd.id)
            if events is not None and rnd.game_hash is not None and _complete(events):
                record = build_record(rnd.id, events, self.epoch, self.pseudonyms.of)
                seal_body = record.seal()
                stored = txn.seal(rnd.id)
                seal = (
                    json.loads(stored[0])
                    if stored is not None
                    else (self.signer.sign(seal_body) if seal_body is not None else None)
                )
                body = from_record(
                    record,
                    prev=prev,
                    environment=self.environment,
                    fairness=self._fairness(rnd.id, record.game_hash, record.crash_point),
                    rules=self.rules,
                    seal=seal,
                )
            else:
                body = from_ledger(
                    txn,
                    rnd,
                    player=self.pseudonyms.player,
                    prev=prev,
                    environment=self.environment,
                    fairness=self._fairness(rnd.id, rnd.game_hash, rnd.crash_point),
                    rules=self.rules,
                )
            doc = self.signer.sign(body)
            txn.add_transcript(rnd.id, doc_hash(doc), prev, canonical(doc).decode(), now)
            self.transcripts_written += 1

    def _fairness(
        self, round_id: int, game_hash: str | None, crash_point: int | None
    ) -> dict[str, Any]:
        chain = self.chain_of(round_id) if self.chain_of is not None else None
        salt, terminating, encoding = (
            chain if chain is not None else (self.salt, self.terminating_hash, self.chain_encoding)
        )
        return fairness_of(game_hash or "", salt, crash_point or 0, terminating, encoding)

    # -- the writer's thread: receipts ----------------------------------------------------

    def bet_receipt(self, event: BetAccepted) -> dict[str, Any]:
        return self.signer.sign(
            bet_receipt(
                event.round_id,
                event.ticket,
                self.pseudonyms.of(event.user),
                event.stake,
                event.auto_cashout,
                self.epoch(event.at_ms),
                queued=event.queued,
            )
        )

    def target_receipt(self, event: AutoCashoutChanged) -> dict[str, Any] | None:
        placed = self._accepted(event.round_id, event.ticket)
        if placed is None:
            return None
        return self.signer.sign(
            bet_receipt(
                event.round_id,
                event.ticket,
                self.pseudonyms.of(placed.user),
                placed.stake,
                event.target,
                self.epoch(placed.at_ms),
                queued=placed.queued,
                kind=TARGET,
                at=self.epoch(event.at_ms),
            )
        )

    def cashout_receipt(self, event: CashedOut) -> dict[str, Any]:
        return self.signer.sign(
            cashout_receipt(
                event.round_id,
                event.ticket,
                self.pseudonyms.of(event.user),
                how=event.kind,
                at=self.epoch(event.at_ms),
                elapsed_ms=event.elapsed_ms,
                multiplier=event.multiplier,
                payout=event.payout,
            )
        )

    def _accepted(self, round_id: int, ticket: str) -> BetAccepted | None:
        events = self.recorder.events(round_id)
        for event in list(events or ()):
            if isinstance(event, BetAccepted) and event.ticket == ticket:
                return event
        return None


def _complete(events: Sequence[Event]) -> bool:
    """The engine's record reaches the round's end (its crash or void)."""
    from .round.events import Crashed, RoundVoided

    return any(isinstance(e, (Crashed, RoundVoided)) for e in events)
