"""Settings: defaults, every problem named at once, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings

VALID = {
    "SLACK_BOT_TOKEN": "xoxb-123",
    "SLACK_SIGNING_SECRET": "shh-signing",
    "ZENLAYER_ACCESS_KEY_ID": "AKID",
    "ZENLAYER_ACCESS_KEY_SECRET": "shh-key-password",
}


def test_defaults_match_the_contract() -> None:
    settings = load_settings(VALID)
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.zenlayer_api_url == "https://console.zenlayer.com"
    # The relative default is resolved once, so every command names the same file (and logs which).
    assert settings.database_url == f"sqlite:///{Path.cwd() / 'vm-bot.db'}"
    assert settings.host == "0.0.0.0"  # noqa: S104
    assert settings.port == 3000
    assert settings.log_format == "text"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.commands_per_minute == 20
    assert settings.poll_interval_seconds == 5
    assert settings.start_timeout_seconds == 900
    assert settings.confirm_ttl_seconds == 600
    assert settings.approval_ttl_seconds == 3600
    assert not settings.socket_mode


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SLACK_BOT_TOKEN": "xoxp-wrong", "PORT": "http", "POLL_INTERVAL_SECONDS": "-1"})
    message = str(caught.value)
    for expected in (
        "SLACK_BOT_TOKEN must start with 'xoxb-'",
        "SLACK_SIGNING_SECRET is required",
        "ZENLAYER_ACCESS_KEY_ID is required",
        "ZENLAYER_ACCESS_KEY_SECRET is required",
        "PORT must be a whole number",
        "POLL_INTERVAL_SECONDS must be at least",
    ):
        assert expected in message


def test_secrets_never_appear_in_reprs_or_errors() -> None:
    settings = load_settings(
        {**VALID, "ZENLAYER_TOKEN": "shh-token", "DATABASE_URL": "postgresql://vmbot:shh-db-password@db/vmbot"}
    )
    shown = repr(settings) + str(settings)
    for secret in ("xoxb-123", "shh-signing", "shh-key-password", "shh-token", "shh-db-password"):
        assert secret not in shown
    with pytest.raises(ConfigError) as caught:
        load_settings({**VALID, "SLACK_BOT_TOKEN": "xoxp-leaky-secret"})
    assert "leaky" not in str(caught.value)


def test_socket_mode_needs_no_signing_secret() -> None:
    env = {k: v for k, v in VALID.items() if k != "SLACK_SIGNING_SECRET"}
    settings = load_settings({**env, "SLACK_APP_TOKEN": "xapp-1"})
    assert settings.socket_mode


def test_token_replaces_the_key_pair() -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "ZENLAYER_TOKEN": "tok"}
    assert load_settings(env).zenlayer_token is not None


def test_dotenv_never_overrides_the_real_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nPOLL_INTERVAL_SECONDS=2\n" + "\n".join(f"{k}={v}" for k, v in VALID.items()))
    monkeypatch.setenv("PORT", "5000")
    settings = load_settings(env_file=env_file)
    assert settings.port == 5000
    assert settings.poll_interval_seconds == 2


def test_replica_identity_and_lease_have_defaults_and_are_validated() -> None:
    settings = load_settings(VALID)
    assert settings.replica_id and "/" not in settings.replica_id  # the host name: stable across restarts
    assert settings.lease_seconds == 15
    assert load_settings({**VALID, "REPLICA_ID": "vm-bot-2", "LEASE_SECONDS": "5"}).replica_id == "vm-bot-2"
    with pytest.raises(ConfigError) as caught:
        load_settings({**VALID, "REPLICA_ID": "a/b", "LEASE_SECONDS": "1"})
    assert "REPLICA_ID must be" in str(caught.value) and "LEASE_SECONDS must be at least 2" in str(caught.value)


def test_broadcast_success_is_off_unless_set_to_a_true_value() -> None:
    assert load_settings(VALID).broadcast_success is False
    assert load_settings({**VALID, "BROADCAST_SUCCESS": "true"}).broadcast_success is True
    assert load_settings({**VALID, "BROADCAST_SUCCESS": "0"}).broadcast_success is False
    with pytest.raises(ConfigError) as caught:
        load_settings({**VALID, "BROADCAST_SUCCESS": "sometimes"})
    assert "BROADCAST_SUCCESS must be true or false, got 'sometimes'" in str(caught.value)
