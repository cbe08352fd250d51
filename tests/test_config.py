import json
from pathlib import Path

import pytest

from pappus.config import ConfigError, Settings, load_settings


def test_defaults() -> None:
    settings = load_settings({}, environ={})
    assert settings == Settings()
    assert settings.port == 8080
    assert settings.queue_size == 4096


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"port": 1111, "queue_size": 7, "total_cores": 3}))
    env = {"PAPPUS_PORT": "2222", "PAPPUS_QUEUE_SIZE": "8"}
    settings = load_settings({"port": 3333}, environ=env, config_file=config)
    assert settings.port == 3333          # CLI wins
    assert settings.queue_size == 8       # env beats file
    assert settings.total_cores == 3      # file beats default


def test_cli_value_equal_to_default_still_wins(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"port": 9999}))
    assert load_settings({"port": 8080}, environ={}, config_file=config).port == 8080


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"demo": True}))
    assert load_settings({}, environ={"PAPPUS_CONFIG": str(config)}).demo is True


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ({"PAPPUS_PORT": "eighty"}, "PAPPUS_PORT"),
        ({"PAPPUS_DEMO": "maybe"}, "PAPPUS_DEMO"),
        ({"PAPPUS_QUEUE_SIZE": "0"}, "queue_size"),
        ({"PAPPUS_INLINE_BUDGET_US": "-1"}, "inline_budget_us"),
    ],
)
def test_bad_environment_values_are_named(source: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings({}, environ=source)


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"prot": 1}))
    with pytest.raises(ConfigError, match="'prot'"):
        load_settings({}, environ={}, config_file=config)


def test_malformed_file(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings({}, environ={}, config_file=config)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({}, environ={}, config_file=tmp_path / "missing.json")


def test_egress_defaults_and_rules(tmp_path: Path) -> None:
    assert load_settings({}, environ={}).effective_egress_allow == ()  # deny by default
    assert load_settings({"demo": True}, environ={}).effective_egress_allow == (
        "127.0.0.0/8", "::1")  # the demo reaches loopback only
    env = load_settings({}, environ={"PAPPUS_EGRESS_ALLOW": "10.0.0.0/8:443, api.example.com"})
    assert env.effective_egress_allow == ("10.0.0.0/8:443", "api.example.com")
    config = tmp_path / "c.json"
    config.write_text('{"egress_allow": ["127.0.0.1"]}')
    assert load_settings({}, environ={}, config_file=config).egress_allow == ("127.0.0.1",)
    with pytest.raises(ConfigError, match="egress_allow"):
        load_settings({}, environ={"PAPPUS_EGRESS_ALLOW": "not a host!"})


def test_inline_budget_from_the_environment_and_zero_turns_it_off() -> None:
    assert load_settings({}, environ={}).inline_budget_us == 1000
    assert load_settings({}, environ={"PAPPUS_INLINE_BUDGET_US": "0"}).inline_budget_us == 0
    assert load_settings({"inline_budget_us": 250}, environ={}).inline_budget_us == 250
