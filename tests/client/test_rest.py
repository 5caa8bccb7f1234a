"""``RestClient`` against a real ``crashd`` on 127.0.0.1: bets, problems, safe retries.

The retry tests put a fault between client and server the way a network does: an
httpx transport that wraps the real one and loses the first *answer* after the server
has acted on the request. The server is never mocked: whether money moved once is
read back from its ledger.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from crashd.api.client import ProblemError, RestClient, RetryPolicy
from crashd.api.client.backoff import Backoff
from crashd.api.config import Config
from crashd.engine.fairness import crash_point
from support.client import make_signed_key, quick_config
from support.servers import running_server

SCOPES = "read:game_state,read:balance,write:bet"
QUICK_RETRY = RetryPolicy(max_attempts=4, backoff=Backoff(base=0.01, cap=0.05))


class LosesFirstAnswers(httpx.AsyncBaseTransport):
    """The real transport, except that the first ``losses`` answers to ``path`` are lost
    on the way back (the server did the work; the client sees a read error)."""

    def __init__(self, path: str, losses: int = 1) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.path = path
        self.losses = losses
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.real.handle_async_request(request)
        if request.url.path != self.path:
            return response
        self.sent.append(request)
        if self.losses > 0:
            self.losses -= 1
            await response.aread()  # the server answered…
            await response.aclose()
            raise httpx.ReadError(
                "connection reset before the answer arrived", request=request
            )  # …we never saw it
        return response

    async def aclose(self) -> None:
        await self.real.aclose()


async def wait_status(api: RestClient, status: str, timeout: float = 15.0) -> int:
    with trio.fail_after(timeout):
        while (state := await api.game_state()).status != status:
            await trio.sleep(0.02)
    return state.round_id


async def test_bet_lifecycle_signed_with_typed_results(tmp_path: Path) -> None:
    config = quick_config(tmp_path)
    async with running_server(config) as info:
        key, signing = make_signed_key(config, SCOPES)
        async with RestClient(info.url, key, signing_secret=signing) as api:
            assert (await api.faucet("ann", 10_000)).available == 10_000
            await api.faucet("amy", 10)
            await wait_status(api, "betting")
            hold = await api.reserve("ann", 1_000)
            assert (hold.amount, hold.available) == (1_000, 9_000)
            ticket = await api.confirm("ann", hold.hold_id)
            assert (ticket.stake, ticket.queued) == (1_000, False)
            spare = await api.reserve("ann", 500)
            assert (await api.release("ann", spare.hold_id))["status"] == "released"
            auto = await api.place_bet("amy", 10, auto_cashout=101, idempotency_key="amy-bet-1")
            # The same key again is the same bet, not a second one.
            assert (
                await api.place_bet("amy", 10, auto_cashout=101, idempotency_key="amy-bet-1")
            ) == auto
            assert (await api.set_auto_cashout(auto.ticket_id, "amy", 102))["auto_cashout"] == 102

            await wait_status(api, "running")
            cashout = await api.cashout(ticket.ticket_id, "ann")
            assert cashout.status in ("cashed_out", "too_late")
            bet = await api.bet(ticket.ticket_id)
            if cashout.status == "cashed_out":
                assert cashout.payout == 1_000 * cashout.multiplier // 100  # type: ignore[operator]
                assert (bet.status, bet.payout) == ("cashed_out", cashout.payout)
            else:
                assert cashout.crash_point is not None and bet.status == "lost"

            finished = await api.round(ticket.round_id) if cashout.status == "too_late" else None
            with trio.fail_after(15):
                while finished is None:
                    try:
                        finished = await api.round(ticket.round_id)
                    except ProblemError as err:
                        assert err.code == "round_not_finished"
                        await trio.sleep(0.05)
            fairness = await api.fairness()
            assert crash_point(finished.game_hash, fairness.salt) == finished.crash_point  # type: ignore[arg-type]
            rounds, _ = await api.rounds(limit=5)
            assert ticket.round_id in [r.round_id for r in rounds]
            assert (await api.balance("ann")).available == 10_000 - 1_000 + (bet.payout or 0)
            amy = await api.bet(auto.ticket_id)
            assert (amy.status, amy.payout) == ("cashed_out", 10)  # 1.02x of 10, floored
            assert (await api.balance("amy")).available == 10
            token = await api.feed_token()
            assert token.ws_url.startswith("ws://") and token.token

            with pytest.raises(ProblemError) as broke:
                await api.reserve("ann", 100_000)
            assert (broke.value.status, broke.value.code) == (409, "insufficient_funds")
            assert broke.value.request_id and broke.value.detail
            assert broke.value.body["requested"] == 100_000

        if signing is not None:
            # The server checks signatures: the same call without the secret is refused.
            async with RestClient(info.url, key) as unsigned:
                with pytest.raises(ProblemError) as refused:
                    await unsigned.faucet("ann", 1)
                assert (refused.value.status, refused.value.code) == (401, "signature_missing")


async def test_a_lost_answer_is_retried_with_the_same_key_and_money_moves_once(
    tmp_path: Path,
) -> None:
    config = quick_config(tmp_path)
    async with running_server(config) as info:
        key, signing = make_signed_key(config, SCOPES)
        lossy = LosesFirstAnswers("/api/v1/sandbox/faucet", losses=2)
        async with RestClient(
            info.url, key, signing_secret=signing, transport=lossy, retry=QUICK_RETRY
        ) as api:
            credited = await api.faucet("ben", 2_500)
            assert credited.available == 2_500  # three deliveries, one credit
            assert (await api.balance("ben")).available == 2_500
            # Every attempt carried the same key and body; each was signed afresh.
            keys = {r.headers["Idempotency-Key"] for r in lossy.sent}
            assert len(lossy.sent) == 3 and len(keys) == 1
            assert len({r.content for r in lossy.sent}) == 1
            if signing is not None:
                assert len({r.headers["X-Crashd-Nonce"] for r in lossy.sent}) == 3

            # The same for a stake: a lost answer to the reserve holds the money once.
            lossy.path, lossy.losses = "/api/v1/bets/reserve", 1
            hold = await api.reserve("ben", 1_000)
            balance = await api.balance("ben")
            assert (balance.available, balance.pending, hold.available) == (1_500, 1_000, 1_500)

        # Out of attempts: the transport error surfaces, and nothing is left half-known:
        # asking again with the same key gets the answer the server stored.
        lossy = LosesFirstAnswers("/api/v1/sandbox/faucet", losses=5)
        retry = RetryPolicy(max_attempts=2, backoff=Backoff(base=0.01, cap=0.01))
        async with RestClient(
            info.url, key, signing_secret=signing, transport=lossy, retry=retry
        ) as api:
            with pytest.raises(httpx.ReadError):
                await api.faucet("cat", 700, idempotency_key="cat-topup-1")
        async with RestClient(info.url, key, signing_secret=signing) as api:
            assert (await api.faucet("cat", 700, idempotency_key="cat-topup-1")).available == 700
            assert (await api.balance("cat")).available == 700


async def test_rate_limits_are_waited_out_or_raised(tmp_path: Path) -> None:
    if "rate_limit_write" not in {f for f in Config.__dataclass_fields__}:
        pytest.skip("this server has no per-key rate limits")
    config = quick_config(tmp_path, rate_limit_write=2, rate_limit_window_s=1.0)
    async with running_server(config) as info:
        key, signing = make_signed_key(config, SCOPES)
        impatient = RetryPolicy(max_attempts=3, max_retry_after=0.0)
        async with RestClient(info.url, key, signing_secret=signing, retry=impatient) as api:
            with pytest.raises(ProblemError) as limited:
                for _ in range(10):
                    await api.faucet("dan", 1)
            assert (limited.value.status, limited.value.code) == (429, "rate_limited")
        async with RestClient(info.url, key, signing_secret=signing, retry=QUICK_RETRY) as api:
            for _ in range(5):
                await api.faucet("eve", 100)
            assert (await api.balance("eve")).available == 500
            assert api.attempts > 5  # some were 429s, retried after Retry-After


async def test_batch_places_and_answers_each_item(tmp_path: Path) -> None:
    config = quick_config(tmp_path)
    async with running_server(config) as info:
        key, signing = make_signed_key(config, SCOPES)
        async with RestClient(info.url, key, signing_secret=signing) as api:
            await api.faucet("bea", 1_000)
            await api.faucet("ben", 1_000)
            await wait_status(api, "betting")
            items = [
                {"action": "place", "key": "bea-1", "user_id": "bea", "amount": 100},
                {"action": "place", "key": "ben-1", "user_id": "ben", "amount": 10_000},
            ]
            first, second = await api.batch(items)
            assert first.ok and first.body["stake"] == 100 and not first.replayed, first
            assert (second.status, second.body["code"]) == (409, "insufficient_funds")
            again = await api.batch(items)
            assert [r.replayed for r in again] == [True, True]
            assert (await api.balance("bea")).available == 900
