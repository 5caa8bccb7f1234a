"""Every ``crashd`` command shown in docs/operations.md and docs/wallet.md parses with the
real CLI: the operator's runbook cannot drift from the program. docs/wallet.md's wallets
file is read by the real loader."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from crashd.api.cli.main import build_parser
from crashd.api.wallet.partners import load_partners
from support.servers import REPO, make_config

DOC = REPO / "docs" / "operations.md"
WALLET_DOC = REPO / "docs" / "wallet.md"


def documented_commands(doc: Path = DOC) -> list[str]:
    # Fenced blocks whose fence names no language, pairing every fence (a ```toml
    # block's closing fence must not open the next block).
    fences = re.findall(r"^ *```(\w*)\n(.*?)^ *```", doc.read_text(), flags=re.S | re.M)
    blocks = [body for lang, body in fences if not lang]
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith("crashd ")
    ]


def test_the_runbook_shows_commands() -> None:
    assert len(documented_commands()) >= 6


@pytest.mark.parametrize("command", documented_commands() + documented_commands(WALLET_DOC))
def test_documented_command_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    args = build_parser().parse_args(argv)  # argparse exits (fails the test) on a bad flag
    assert callable(args.func)


def test_the_wallet_docs_show_commands() -> None:
    assert len(documented_commands(WALLET_DOC)) >= 4


def test_the_documented_wallets_file_loads(tmp_path: Path) -> None:
    [toml] = re.findall(r"```toml\n(.*?)```", WALLET_DOC.read_text(), flags=re.S)
    text = "\n".join(line.strip() for line in toml.splitlines())
    path = tmp_path / "crashd-wallets.toml"
    path.write_text(text)
    secret = tmp_path / "acme-wallet.secret"
    secret.write_text("a-shared-secret-of-32-characters\n")
    os.chmod(secret, 0o600)
    [partner] = load_partners(make_config(tmp_path, wallets_file=path)).values()
    assert (partner.partner_id, partner.url, partner.currency) == (
        "acme",
        "https://wallet.acme.example/crashd",
        "EUR",
    )
    assert (partner.signer, partner.timeout_ms) == ("hmac-sha256", 1500)
    assert partner.secret == "a-shared-secret-of-32-characters"
