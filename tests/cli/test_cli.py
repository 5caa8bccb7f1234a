"""The ``crashd`` CLI: verify and chain, including bad input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from crashd.api.cli.main import main
from crashd.engine import chainstore
from crashd.engine.fairness import ChainReader, crash_point

KNOWN_SALT = "0000000000000000004d6ec16dafe9d8370958664c1dc422f452892264c59526"
KNOWN_HASH = "6774ddd3dfe94e2c966d4ca5c5ed6dcd1f6a4fdab87ad12677ee7c5b96d6a3f5"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own exits (--help, usage errors)
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_known_answer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "verify", "--hash", KNOWN_HASH, "--salt", KNOWN_SALT)
    assert (code, out, err) == (0, "3.74\n", "")


def test_verify_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--hash", KNOWN_HASH, "--salt", KNOWN_SALT, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["crash_point"] == "3.74" and doc["crash_point_hundredths"] == 374


@pytest.fixture
def chain_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "chain.json"
    code, out, _ = run(
        capsys, "chain", "new", "--file", str(path), "--length", "300", "--interval", "32"
    )
    assert code == 0
    assert "terminating hash:" in out
    return path


def test_chain_new_is_secret_and_never_overwritten(
    chain_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stat.S_IMODE(os.stat(chain_file).st_mode) == 0o600
    before = chain_file.read_bytes()
    code, _, err = run(capsys, "chain", "new", "--file", str(chain_file), "--length", "10")
    assert code == 2 and "refusing to overwrite" in err
    assert chain_file.read_bytes() == before


def test_chain_salt_is_fixed_once(chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "chain", "show", "--file", str(chain_file))
    assert code == 0 and "not fixed yet" in out
    assert run(capsys, "chain", "salt", "block-800000", "--file", str(chain_file))[0] == 0
    assert run(capsys, "chain", "salt", "block-800000", "--file", str(chain_file))[0] == 0
    code, _, err = run(capsys, "chain", "salt", "other", "--file", str(chain_file))
    assert code == 2 and "already fixed" in err
    assert chainstore.load(chain_file).salt == "block-800000"
    assert stat.S_IMODE(os.stat(chain_file).st_mode) == 0o600


def test_verify_linkage_against_created_chain(
    chain_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = chainstore.load(chain_file)
    terminating = chain.spec.terminating_hash.hex()
    game_7 = ChainReader(chain.spec).game_hash(7)
    code, out, _ = run(
        capsys, "verify", "--hash", game_7, "--terminating", terminating, "--salt", "s"
    )
    assert code == 0
    assert out.splitlines() == [
        f"{crash_point(game_7, 's') // 100}.{crash_point(game_7, 's') % 100:02d}",
        f"linked: game 7 of the chain ending in {terminating}",
    ]
    code, out, _ = run(capsys, "verify", "--hash", game_7, "--terminating", terminating, "--json")
    assert json.loads(out)["position"] == 7
    code, _, err = run(
        capsys, "verify", "--hash", game_7, "--terminating", terminating, "--max-steps", "6"
    )
    assert code == 1 and "not linked" in err
    code, _, _ = run(
        capsys,
        "verify",
        "--hash",
        game_7,
        "--terminating",
        terminating,
        "--chain",
        "raw",
        "--max-steps",
        "400",
    )
    assert code == 1


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["verify", "--hash", "xyz", "--salt", "s"], "64 hex digits"),
        (["verify", "--hash", "zz" * 32, "--salt", "s"], "not hexadecimal"),
        (["verify", "--salt", "s"], "required: --hash"),
        (["verify", "--hash", KNOWN_HASH], "give --salt"),
        (["verify", "--hash", KNOWN_HASH, "--terminating", "00"], "64 hex digits"),
        (
            ["verify", "--hash", KNOWN_HASH, "--terminating", KNOWN_HASH, "--max-steps", "-1"],
            "must not be negative",
        ),
        (
            ["verify", "--hash", KNOWN_HASH, "--terminating", KNOWN_HASH, "--max-steps", "ten"],
            "invalid int",
        ),
        (["verify", "--hash", KNOWN_HASH, "--salt", "sälz"], "ASCII"),
        (["chain", "new", "--length", "0", "--file", "/nonexistent/x"], "--length"),
        (["chain", "show", "--file", "/nonexistent/chain.json"], "no chain file"),
        (["nonsense"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--help"],
        ["verify", "--help"],
        ["chain", "--help"],
        ["chain", "new", "--help"],
        ["serve", "--help"],
    ):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and "usage:" in out


def test_console_script_installed() -> None:
    exe = Path(sys.executable).with_name("crashd")
    result = subprocess.run(
        [str(exe), "verify", "--hash", KNOWN_HASH, "--salt", KNOWN_SALT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout == "3.74\n"
    bad = subprocess.run(
        [str(exe), "verify", "--hash", "nothex"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
