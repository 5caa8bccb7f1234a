"""Configuration precedence: flags > CRASHD_* environment > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from crashd.api.cli.main import main
from crashd.api.config import SETTINGS, Config, ConfigError, load_config


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_embedded_ones() -> None:
    config = load_config({}, environ={})
    assert (config.host, config.port, config.environment) == ("127.0.0.1", 8000, "sandbox")
    assert config.database == Path("crashd.sqlite3") and config.chain_file == Path(
        "crashd-chain.json"
    )
    assert config.chain_length == 10_000_000
    assert config == Config()


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    toml = _write(
        tmp_path / "crashd.toml",
        'port = 1111\nhost = "0.0.0.0"\nchain_length = 500\nlog_level = "debug"\n',
    )
    env = {"CRASHD_PORT": "2222", "CRASHD_CHAIN_LENGTH": "600"}
    config = load_config({"port": "3333"}, environ=env, config_file=toml)
    assert config.port == 3333  # flag beats env and file
    assert config.chain_length == 600  # env beats file
    assert config.host == "0.0.0.0"  # file beats default
    assert config.log_level == "debug"
    assert config.keep_alive_timeout == Config().keep_alive_timeout  # default
    # Unset flags (None) and empty variables do not override.
    assert load_config({"port": None}, environ={"CRASHD_PORT": ""}, config_file=toml).port == 1111


def test_config_file_from_environment_and_relative_paths(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    toml = _write(
        conf_dir / "c.toml", 'database = "data/crashd.sqlite3"\nchain_file = "/abs/chain.json"\n'
    )
    config = load_config({}, environ={"CRASHD_CONFIG": str(toml)})
    assert config.database == conf_dir / "data" / "crashd.sqlite3"  # relative to the file
    assert config.chain_file == Path("/abs/chain.json")
    # From the environment or a flag, relative to the working directory.
    assert load_config({}, environ={"CRASHD_DATABASE": "x.db"}).database == Path("x.db")


@pytest.mark.parametrize(
    ("flags", "env", "toml", "message"),
    [
        ({"port": "eighty"}, {}, "", "integer"),
        ({"port": "70000"}, {}, "", "at most"),
        ({}, {"CRASHD_ENVIRONMENT": "staging"}, "", "sandbox, production"),
        ({}, {}, "chain_lenght = 5\n", "unknown setting"),
        ({}, {}, 'port = "8000"\n', "integer"),
        ({}, {}, "port = true\n", "integer"),
        ({}, {}, "keep_alive_timeout = 0\n", "at least"),
        ({}, {}, "idempotency_retention_hours = 1\n", "at least 24"),
        ({}, {}, "port = [\n", "cannot read"),
        ({}, {"CRASHD_MAX_BODY_BYTES": "1"}, "", "at least"),
    ],
)
def test_bad_settings_are_clear_errors(
    tmp_path: Path, flags: dict[str, str], env: dict[str, str], toml: str, message: str
) -> None:
    path = _write(tmp_path / "c.toml", toml)
    with pytest.raises(ConfigError, match=message):
        load_config(flags, environ=env, config_file=path)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config({}, environ={}, config_file=tmp_path / "nope.toml")


def test_every_setting_has_a_flag_env_and_toml_name() -> None:
    for setting in SETTINGS:
        assert setting.env == "CRASHD_" + setting.name.upper()
        assert setting.flag == "--" + setting.name.replace("_", "-")
        assert setting.help


def test_serve_reports_bad_configuration_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--port", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--port" in err
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert (
        main(
            [
                "serve",
                "--port",
                "0",
                "--chain-file",
                str(tmp_path / "no" / "dir" / "c.json"),
                "--database",
                str(tmp_path / "db.sqlite3"),
            ]
        )
        == 2
    )
    assert "no directory" in capsys.readouterr().err
