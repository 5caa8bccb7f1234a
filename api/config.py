"""Server configuration: flags > environment (``CRASHD_*``) > TOML file > defaults.

Every setting is declared once in :data:`SETTINGS` (name, type, default, bounds, help),
and the flag (``--keep-alive-timeout``), the environment variable
(``CRASHD_KEEP_ALIVE_TIMEOUT``) and the TOML key (``keep_alive_timeout``) are all derived
from that name, so the three sources cannot drift apart and docs/api.md can list them
from one table. Unknown TOML keys and out-of-range values are errors, not warnings: a
misspelt ``chain_lenght`` silently ignored would create a 10-million-game chain.

Relative paths in a TOML file are relative to the file's directory (so a config file
and its database can move together); relative paths from flags or the environment are
relative to the working directory, as a shell user expects.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from crashd.engine.bounds import MAX_AMOUNT
from crashd.engine.ledger.database import is_postgres
from crashd.engine.ledger.model import ENVIRONMENTS, Environment

ENV_PREFIX = "CRASHD_"
CONFIG_ENV = "CRASHD_CONFIG"

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A setting is unknown, of the wrong type or out of range; one line for the operator."""


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8000
    feed_port: int = 8001
    database: Path | str = Path("crashd.sqlite3")
    pepper_file: Path | None = None
    standby: bool = False
    chain_file: Path = Path("crashd-chain.json")
    signing_key_file: Path | None = None
    chain_length: int = 10_000_000
    environment: Environment = "sandbox"
    keep_alive_timeout: float = 5.0
    graceful_timeout: float = 3.0
    max_body_bytes: int = 64 * 1024
    idempotency_retention_hours: int = 24
    log_level: str = "info"
    log_format: str = "auto"
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    betting_ms: int = 5_000
    pause_ms: int = 3_000
    tick_hz: int = 20
    min_stake: int = 1
    max_stake: int = 100_000_00
    max_profit: int = 0
    max_profit_bankroll_bp: int = 100
    max_win: int = 0
    max_bets_per_user: int = 1
    rtp_window_rounds: int = 1000
    rtp_alert_sigma: float = 4.0
    rtp_min_bets: int = 1000
    chain_warn_games: int = 100_000
    stop_wait_s: float = 5.0
    signature_window_s: int = 30
    rate_limit_read: int = 6000
    rate_limit_write: int = 3000
    rate_limit_feed: int = 1200
    rate_limit_anonymous: int = 600
    rate_limit_sessions: int = 30
    rate_limit_window_s: float = 60.0
    psp_secrets_file: Path = Path("crashd-psp-secrets")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    redis_url: str | None = None
    redis_prefix: str = "crashd"
    relay_socket: Path | None = None
    feed_url: str | None = None
    wallets_file: Path = Path("crashd-wallets.toml")
    wallet_timeout_ms: int = 2000
    wallet_retry_horizon_hours: int = 24
    wallet_log_retention_days: int = 122
    wallet_breaker_failures: int = 5
    wallet_breaker_cooldown_s: float = 5.0
    wallet_max_in_flight: int = 64

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **changes)


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "address to listen on"),
    Setting("port", int, "TCP port (0 picks a free one, reported on stdout)", 0, 65535),
    Setting(
        "feed_port", int, "TCP port of the WebSocket feed listener (0 picks a free one)", 0, 65535
    ),
    Setting(
        "database",
        Path,
        "the database (ledger, API keys, stored replies): a SQLite file, or a "
        "postgresql:// URL (docs/scale-out.md)",
    ),
    Setting(
        "pepper_file",
        Path,
        "the API key pepper (default: beside a SQLite database; crashd.pepper for "
        "PostgreSQL, the same file on every crashd of that database)",
    ),
    Setting(
        "standby",
        bool,
        "PostgreSQL: wait as a hot standby while another crashd holds the leader "
        "lease, then take over (without it, a held lease is an error)",
    ),
    Setting("chain_file", Path, "secret hash chain file, created on first start if missing"),
    Setting(
        "signing_key_file",
        Path,
        "secret Ed25519 key signing transcripts, seals and receipts, created with the chain "
        "(default: beside the chain file, crashd-chain.signing.json)",
    ),
    Setting("chain_length", int, "games in a chain created on first start", 1, 1_000_000_000),
    Setting("environment", str, "sandbox (demo money only) or production", choices=ENVIRONMENTS),
    Setting(
        "keep_alive_timeout",
        float,
        "seconds an idle HTTP keep-alive connection stays open",
        0.1,
        3600,
    ),
    Setting(
        "graceful_timeout",
        float,
        "seconds to let HTTP requests finish on shutdown, "
        "after the engine stopped (the feed closes meanwhile)",
        0,
        3600,
    ),
    Setting(
        "max_body_bytes", int, "largest accepted request body (413 above)", 1024, 16 * 1024 * 1024
    ),
    Setting(
        "idempotency_retention_hours",
        int,
        "how long Idempotency-Key records are kept",
        24,
        24 * 365,
    ),
    Setting("log_level", str, "log level", choices=LOG_LEVELS),
    Setting(
        "log_format",
        str,
        "log lines on stderr: json (one object per line), text, or auto (json unless "
        "stderr is a terminal)",
        choices=("auto", "json", "text"),
    ),
    Setting(
        "synchronous",
        str,
        "SQLite synchronous level of the ledger (FULL: every acknowledged "
        "transfer survives a power cut; NORMAL: survives a process crash)",
        choices=("FULL", "NORMAL"),
    ),
    Setting("betting_ms", int, "length of each round's betting window, ms", 0, 3_600_000),
    Setting(
        "pause_ms", int, "pause after a crash before the next betting window, ms", 0, 3_600_000
    ),
    Setting("tick_hz", int, "multiplier ticks per second on the feed", 1, 1000),
    Setting("min_stake", int, "smallest stake per bet, minor units", 1, MAX_AMOUNT),
    Setting("max_stake", int, "largest stake per bet, minor units", 1, MAX_AMOUNT),
    Setting(
        "max_profit",
        int,
        "cap on players' total profit per round, minor units; "
        "everyone still in is cashed out when it is reached (0: no cap)",
        0,
        10**15,
    ),
    Setting(
        "max_profit_bankroll_bp",
        int,
        "in production without a fixed max_profit, each round's cap on players' profit is "
        "this many basis points of the house bankroll (100 = 1 percent, Bustabit's rule)",
        1,
        1000,
    ),
    Setting(
        "max_win",
        int,
        "cap on one bet's profit, minor units; a bet reaching it is cashed out (0: no cap)",
        0,
        MAX_AMOUNT,
    ),
    Setting("max_bets_per_user", int, "bets one user may have in one round (Aviator: 2)", 1, 10),
    Setting(
        "rtp_window_rounds",
        int,
        "RTP monitoring: the last this many crashed rounds are compared with the theoretical 99 percent",
        10,
        1_000_000,
    ),
    Setting(
        "rtp_alert_sigma",
        float,
        "RTP monitoring: alert when the observed RTP is this many standard deviations "
        "from the expected",
        1,
        20,
    ),
    Setting(
        "rtp_min_bets",
        int,
        "RTP monitoring: no alert until the window holds this many bets",
        1,
        10**9,
    ),
    Setting(
        "chain_warn_games",
        int,
        "warn (log, metric, readiness body) when the hash chains hold fewer unplayed games",
        0,
        10**9,
    ),
    Setting(
        "stop_wait_s",
        float,
        "on shutdown, a running round that crashes within this "
        "many seconds plays to its crash; any other round is voided at once and its bets "
        "refunded",
        0,
        3600,
    ),
    Setting(
        "signature_window_s",
        int,
        "signed requests: how far (s) X-Crashd-Timestamp may be from the server clock, either way",
        1,
        600,
    ),
    Setting(
        "rate_limit_read", int, "requests per key per rate_limit_window_s on GET routes", 1, 10**7
    ),
    Setting(
        "rate_limit_write",
        int,
        "requests per key per rate_limit_window_s on other routes",
        1,
        10**7,
    ),
    Setting("rate_limit_feed", int, "feed tokens per key per rate_limit_window_s", 1, 10**7),
    Setting(
        "rate_limit_anonymous",
        int,
        "requests per client IP per rate_limit_window_s without a valid API key",
        1,
        10**7,
    ),
    Setting(
        "rate_limit_sessions",
        int,
        "public session tokens (page viewers, sandbox demo players) per client IP per "
        "rate_limit_window_s; 0 turns public sessions off",
        0,
        10**7,
    ),
    Setting(
        "rate_limit_window_s",
        float,
        "the rate limit window, seconds (the whole limit "
        "may be spent at once, then it refills evenly)",
        1,
        86400,
    ),
    Setting(
        "psp_secrets_file",
        Path,
        "PSP webhook secrets, one per line (several while the PSP "
        "rotates); re-read on change, never logged",
    ),
    Setting(
        "tls_cert", Path, "TLS certificate chain (PEM); with tls_key, serve HTTPS (TLS >= 1.2)"
    ),
    Setting("tls_key", Path, "TLS private key (PEM) for tls_cert"),
    Setting(
        "redis_url",
        str,
        "Redis for feed edges and API processes on other machines (redis://HOST:PORT/DB, "
        "rediss://…, unix:///PATH); frames and commands only, never money (docs/scale-out.md)",
    ),
    Setting(
        "redis_prefix",
        str,
        "prefix of every Redis key of this deployment (a sandbox and a production crashd "
        "may share one Redis with different prefixes)",
    ),
    Setting(
        "relay_socket",
        Path,
        "Unix socket where the engine feeds the edges on its machine (crashd edge), and "
        "where they connect",
    ),
    Setting(
        "feed_url",
        str,
        "the feed URL an API process hands to clients (ws://… of the edges' port or of a "
        "load balancer in front of them); the engine hands out its own listener's",
    ),
    Setting(
        "wallets_file",
        Path,
        "partners that play on their own wallet (seamless mode): TOML, one [partners.ID] "
        "table each (docs/wallet.md); missing: every partner plays on crashd's balances",
    ),
    Setting(
        "wallet_timeout_ms",
        int,
        "seamless: how long crashd waits for a wallet's answer (a debit also no longer "
        "than until betting closes)",
        50,
        60_000,
    ),
    Setting(
        "wallet_retry_horizon_hours",
        int,
        "seamless: how long the outbox retries a credit or rollback before parking it in "
        "the failed queue",
        1,
        24 * 30,
    ),
    Setting(
        "wallet_log_retention_days",
        int,
        "seamless: how long every wallet call and its answer is kept (reconciliation)",
        1,
        3650,
    ),
    Setting(
        "wallet_breaker_failures",
        int,
        "seamless: failed wallet calls in a row that pause a partner's bets (circuit breaker)",
        1,
        1000,
    ),
    Setting(
        "wallet_breaker_cooldown_s",
        float,
        "seamless: how long bets stay paused before a probe call (doubling while the "
        "wallet keeps failing, up to 12 times this)",
        0.1,
        3600,
    ),
    Setting(
        "wallet_max_in_flight",
        int,
        "seamless: outbox calls (credits, rollbacks) in flight to one wallet at once",
        1,
        1024,
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}
assert set(_BY_NAME) == {f.name for f in fields(Config)}, "every Config field needs a Setting"


def _convert(setting: Setting, value: Any, origin: str, base_dir: Path | None) -> Any:
    where = f"{origin}: {setting.name}"
    kind = setting.kind
    if kind is bool:
        if isinstance(value, str) and origin != "config file":
            text = value.strip().lower()
            if text not in _BOOLS:
                raise ConfigError(f"{where} must be one of on/off, true/false, 1/0, not {value!r}")
            return _BOOLS[text]
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if setting.name == "database" and isinstance(value, str) and is_postgres(value.strip()):
        return value.strip()  # a URL, not a path: kept as given
    if isinstance(value, str) and origin != "config file":
        # Flags and environment variables are text; the TOML file is typed.
        value = value.strip()
        if kind is int:
            try:
                value = int(value, 10)
            except ValueError:
                raise ConfigError(f"{where} must be an integer, not {value!r}") from None
        elif kind is float:
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, not {value!r}") from None
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer")
    elif kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a number")
        value = float(value)
    elif kind in (str, Path):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty string")
        if kind is Path:
            path = Path(value).expanduser()
            value = base_dir / path if base_dir is not None and not path.is_absolute() else path
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"{where} must be one of {', '.join(setting.choices)}, not {value!r}")
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"{where} must be at least {setting.minimum:g}")
    if setting.maximum is not None and value > setting.maximum:
        raise ConfigError(f"{where} must be at most {setting.maximum:g}")
    return value


_BOOLS = {"on": True, "true": True, "1": True, "yes": True}
_BOOLS |= {"off": False, "false": False, "0": False, "no": False}


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    unknown = sorted(set(doc) - set(_BY_NAME))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    base = path.parent
    return {
        name: _convert(_BY_NAME[name], value, "config file", base) for name, value in doc.items()
    }


def load_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Config:
    """Resolve the configuration. ``flags`` maps setting names to values given on the
    command line (``None`` = not given); ``config_file`` (or ``CRASHD_CONFIG``) is read
    if set."""
    flags = flags or {}
    environ = os.environ if environ is None else environ
    unknown = sorted(set(flags) - set(_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
    if config_file is not None:
        values.update(read_config_file(config_file))
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is not None and raw != "":
            values[setting.name] = _convert(setting, raw, f"environment {setting.env}", None)
    for name, value in flags.items():
        if value is not None:
            values[name] = _convert(_BY_NAME[name], value, f"flag {_BY_NAME[name].flag}", None)
    return Config(**values)


def add_arguments(parser: Any, names: tuple[str, ...] | None = None) -> None:
    """Add ``--config`` and one flag per setting (or per ``names``) to an argparse parser.

    Defaults are ``None`` so :func:`load_config` can tell "not given" from "given".
    """
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML config file (or ${CONFIG_ENV}); flags and CRASHD_* variables override it",
    )
    for setting in SETTINGS:
        if names is not None and setting.name not in names:
            continue
        default = getattr(Config(), setting.name)
        if setting.kind is bool:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                default=None,
                action="store_const",
                const="on",
                help=f"{setting.help} (or ${setting.env}=on)",
            )
            continue
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            metavar=setting.name.upper(),
            choices=setting.choices or None,
            help=f"{setting.help} (default {default}; ${setting.env})",
        )


def config_from_args(args: Any, names: tuple[str, ...] | None = None) -> Config:
    wanted = names if names is not None else tuple(_BY_NAME)
    flags = {name: getattr(args, name, None) for name in wanted}
    return load_config(flags, config_file=getattr(args, "config", None))


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`on`" if value else "`off`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def _range_text(setting: Setting) -> str:
    if setting.choices:
        return " / ".join(f"`{c}`" for c in setting.choices)
    if setting.minimum is None and setting.maximum is None:
        return ""

    def num(v: float | None) -> str:
        if v is None:
            return ""
        return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"

    return f"{num(setting.minimum)}..{num(setting.maximum)}"


def describe_settings() -> str:
    """Every setting as docs/api.md's Markdown table (a test keeps them equal)."""
    defaults = Config()
    lines = [
        "| TOML key | flag | environment | default | allowed | |",
        "|---|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = _default_text(getattr(defaults, s.name))
        lines.append(
            f"| `{s.name}` | `{s.flag}` | `{s.env}` | {default} | {_range_text(s)} | {s.help} |"
        )
    return "\n".join(lines) + "\n"


def describe(config: Config) -> str:
    """A one-line summary for the startup log (secrets stay out: the password of a Redis or
    PostgreSQL URL)."""
    return " ".join(
        f"{f.name}={redact_url(v) if isinstance(v := getattr(config, f.name), str) else v}"
        for f in fields(config)
    )


def redact_url(text: str) -> str:
    """``scheme://user:password@host`` with the password replaced by ``***``."""
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest:
        return text
    auth, _, host = rest.rpartition("@")
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in auth else f"{scheme}://***@{host}"
