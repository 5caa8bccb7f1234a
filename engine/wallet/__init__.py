"""The seamless wallet: crashd plays on the operator's own wallet (docs/wallet.md).

The protocol core is pure, like the round: ``contract`` (the calls crashd makes, their
bodies and how an answer is read), ``signing`` (the pluggable request signer), ``retry``
(exponential backoff with jitter, the retry horizon) and ``breaker`` (the per-partner
circuit breaker) take time and randomness as arguments and do no I/O. ``seamless`` is
the Trio driver around them and the game: a bet's debit before it may play, the durable
outbox of credits and rollbacks, recovery after a restart. The HTTP transport is the
API's (``crashd.api.wallet``): the engine only sees a ``WalletPort``.
"""
