"""Every ``crashd`` command shown in docs/operations.md parses with the real CLI: the
operator's runbook cannot drift from the program."""

from __future__ import annotations

import re
import shlex

import pytest

from crashd.api.cli.main import build_parser
from support.servers import REPO

DOC = REPO / "docs" / "operations.md"


def documented_commands() -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", DOC.read_text(), flags=re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith("crashd ")
    ]


def test_the_runbook_shows_commands() -> None:
    assert len(documented_commands()) >= 6


@pytest.mark.parametrize("command", documented_commands())
def test_documented_command_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    args = build_parser().parse_args(argv)  # argparse exits (fails the test) on a bad flag
    assert callable(args.func)
