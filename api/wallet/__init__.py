"""The seamless wallet's outside (docs/wallet.md): the partners' wallet settings
(``partners``), the HTTP transport to a wallet (``client``), the routes for bets,
sessions and reconciliation (``routes``), and ``crashd wallet mock``'s wallet
(``mock``). The rules live in ``crashd.engine.wallet``."""
