"""Which partners play in seamless mode, and where their wallets are: the wallets file.

``wallets_file`` (default ``crashd-wallets.toml``; missing means every partner plays on
crashd's own balances, the transfer wallet) has one table per seamless partner::

    [partners.acme]
    url = "https://wallet.acme.example/crashd"   # crashd POSTs to {url}/debit, …
    secret_file = "acme-wallet.secret"           # the shared HMAC secret (or: secret = "…")
    currency = "EUR"
    signer = "hmac-sha256"                       # optional: the default (docs/wallet.md)
    timeout_ms = 1500                            # optional: else wallet_timeout_ms

Every key of partner ``acme`` then bets on acme's wallet. A file holding a secret must
be readable by its owner only (mode 0600), as the chain file is: a wallet secret signs
debits and credits. Relative paths are relative to the wallets file. Unknown keys and
bad values are errors that stop the start, with one line saying which.
"""

from __future__ import annotations

import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from crashd.api.config import Config, ConfigError
from crashd.api.security.keys import PARTNER_ID
from crashd.engine.wallet.signing import SIGNERS

_CURRENCY = re.compile(r"[A-Za-z0-9]{1,12}")
_KEYS = frozenset({"url", "secret", "secret_file", "currency", "signer", "timeout_ms"})


@dataclass(frozen=True)
class PartnerConfig:
    partner_id: str
    url: str
    secret: str
    currency: str
    signer: str
    timeout_ms: int

    def __repr__(self) -> str:  # never print the secret
        return (
            f"PartnerConfig({self.partner_id!r}, {self.url!r}, {self.currency!r}, {self.signer!r})"
        )


def _private(path: Path, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} holds {what} but is readable by others (mode {mode:o}): chmod 600 it"
        )


def load_partners(config: Config) -> dict[str, PartnerConfig]:
    """The seamless partners of ``config.wallets_file`` (none if it does not exist)."""
    path = config.wallets_file
    if not path.exists():
        return {}
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read wallets file {path}: {exc}") from None
    unknown = set(doc) - {"partners"}
    if unknown:
        raise ConfigError(f"wallets file {path}: unknown table(s) {', '.join(sorted(unknown))}")
    partners = doc.get("partners", {})
    if not isinstance(partners, dict):
        raise ConfigError(f"wallets file {path}: [partners.ID] tables expected")
    out: dict[str, PartnerConfig] = {}
    for partner_id, table in partners.items():
        where = f"wallets file {path}: partners.{partner_id}"
        if re.fullmatch(PARTNER_ID, partner_id) is None:
            raise ConfigError(f"{where}: a partner id must match {PARTNER_ID}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        bad = set(table) - _KEYS
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
        url = table.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{where}: url must be an http(s) URL")
        if parts.query or parts.fragment:
            raise ConfigError(f"{where}: url takes no query or fragment")
        if (
            config.environment == "production"
            and parts.scheme != "https"
            and parts.hostname
            not in (
                "127.0.0.1",
                "localhost",
                "::1",
            )
        ):
            raise ConfigError(f"{where}: a production wallet is reached over https")
        if ("secret" in table) == ("secret_file" in table):
            raise ConfigError(f"{where}: give exactly one of secret and secret_file")
        if "secret" in table:
            secret = table["secret"]
            _private(path, "a wallet secret")
        else:
            secret_path = Path(str(table["secret_file"])).expanduser()
            if not secret_path.is_absolute():
                secret_path = path.parent / secret_path
            try:
                _private(secret_path, "a wallet secret")
                secret = secret_path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read secret_file: {exc}") from None
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(f"{where}: the secret needs at least 16 characters")
        currency = table.get("currency")
        if not isinstance(currency, str) or _CURRENCY.fullmatch(currency) is None:
            raise ConfigError(f"{where}: currency must be 1-12 letters or digits (e.g. EUR)")
        signer = table.get("signer", "hmac-sha256")
        if signer not in SIGNERS:
            raise ConfigError(f"{where}: signer must be one of {', '.join(sorted(SIGNERS))}")
        timeout_ms = table.get("timeout_ms", config.wallet_timeout_ms)
        if type(timeout_ms) is not int or not 50 <= timeout_ms <= 60_000:
            raise ConfigError(f"{where}: timeout_ms must be an integer in 50..60000")
        out[partner_id] = PartnerConfig(
            partner_id, str(url).rstrip("/"), secret, currency, str(signer), timeout_ms
        )
    return out
