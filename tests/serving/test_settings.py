"""Settings come from SPEECH_* variables; every bad one stops start-up with a message naming it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from serving.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("SPEECH_") and name != "SPEECH_MODEL_CACHE":
            monkeypatch.delenv(name)


def test_defaults_serve_the_bundled_model_locally():
    settings = load_settings()
    assert settings.region is None and settings.model.bucket is None
    assert settings.region_label == "local"
    assert not settings.auth.is_enabled


def test_nested_variables_use_double_underscores(monkeypatch):
    monkeypatch.setenv("SPEECH_REGION", "eu-west-1")
    monkeypatch.setenv("SPEECH_STREAM__MAX_SESSIONS", "5")
    monkeypatch.setenv("SPEECH_LIMITS__MAX_UPLOAD_BYTES", "1000")
    settings = load_settings()
    assert (settings.stream.max_sessions, settings.limits.max_upload_bytes) == (5, 1000)
    assert settings.region_label == "eu-west"


def test_off_in_the_environment_turns_speculative_finals_and_fitted_windows_off(monkeypatch):
    defaults = load_settings().stream
    assert (defaults.speculative_final_ms, defaults.final_window_pad_s) == (200, 5.0)
    monkeypatch.setenv("SPEECH_STREAM__SPECULATIVE_FINAL_MS", "off")
    monkeypatch.setenv("SPEECH_STREAM__FINAL_WINDOW_PAD_S", "Off")
    stream = load_settings().stream
    assert (stream.speculative_final_ms, stream.final_window_pad_s) == (None, None)
    monkeypatch.setenv("SPEECH_STREAM__FINAL_WINDOW_PAD_S", "3")
    assert load_settings().stream.final_window_pad_s == 3.0


def test_batch_requests_are_on_30_second_windows_unless_a_window_pad_is_set(monkeypatch):
    assert load_settings().model.window_pad_s is None
    monkeypatch.setenv("SPEECH_MODEL__WINDOW_PAD_S", "3")
    assert load_settings().model.window_pad_s == 3.0
    monkeypatch.setenv("SPEECH_MODEL__WINDOW_PAD_S", "off")
    assert load_settings().model.window_pad_s is None


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SPEECH_STREAM__FINAL_WINDOW_PAD_S", "0.5", "PAD_S='0.5': Input should be greater than or equal to 1"),
        ("SPEECH_MODEL__WINDOW_PAD_S", "31", "PAD_S='31': Input should be less than or equal to 30"),
        ("SPEECH_STREAM__MAX_SESSIONS", "0", "SPEECH_STREAM__MAX_SESSIONS='0': Input should be greater than 0"),
        ("SPEECH_LIMITS__MAX_UPLOAD_BYTES", "lots", "MAX_UPLOAD_BYTES='lots': Input should be a valid integer"),
        ("SPEECH_REGION", "us-east-1", "SPEECH_REGION='us-east-1': no region is deployed to AWS region 'us-east-1'"),
        ("SPEECH_LOG_LEVEL", "loud", "SPEECH_LOG_LEVEL='loud': Input should be 'debug', 'info', 'warning' or 'error'"),
        ("SPEECH_AUTH__API_KEY_HASHES", "secret", "API_KEY_HASHES='secret': entry 'secret'... is not a SHA-256"),
        ("SPEECH_AUTH__ADMIN_KEY_HASHES", "pw", "SPEECH_AUTH__ADMIN_KEY_HASHES='pw': entry 'pw'... is not a SHA-256"),
        ("SPEECH_MODEL__VERSION", "..", "SPEECH_MODEL__VERSION='..': model version '..' is not accepted; use 1-64"),
        ("SPEECH_MODEL__VERSION", ".", "SPEECH_MODEL__VERSION='.': model version '.' is not accepted"),
        ("SPEECH_MODEL__NAME", "a/b", "SPEECH_MODEL__NAME='a/b': model name 'a/b' is not accepted"),
        ("SPEECH_MODEL__BEAM_SIZE", "0", "SPEECH_MODEL__BEAM_SIZE='0': Input should be greater than or equal to 1"),
        ("SPEECH_STREAM__MAX_REALTIME_FACTOR", "0.5", "FACTOR='0.5': Input should be greater than or equal to 1"),
        ("SPEECH_SHUTDOWN__GRACE_S", "0", "SPEECH_SHUTDOWN__GRACE_S='0': Input should be greater than 0"),
        ("SPEECH_SPEAKERS__REDIS_URL", "speakers:6379", "REDIS_URL='speakers:6379': must start with redis://, rediss://"),
        ("SPEECH_SPEAKERS__THRESHOLD", "1.5", "SPEECH_SPEAKERS__THRESHOLD='1.5': Input should be less than 1"),
        ("SPEECH_SPEAKERS__MAX_CLIPS", "0", "SPEECH_SPEAKERS__MAX_CLIPS='0': Input should be greater than 0"),
        ("SPEECH_MODEL__LANGUAGES", '{"english": "whisper-tiny.en"}', "'english' is not an ISO 639-1 language code"),
        ("SPEECH_MODEL__LANGUAGES", '{"en": "whisper-base"}', "'whisper-base' is SPEECH_MODEL__NAME already"),
    ],
)  # fmt: skip
def test_a_bad_variable_is_named_with_its_value_and_what_is_allowed(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert expected in str(error.value)


def test_a_bucket_without_a_region_is_refused_because_its_jurisdiction_cannot_be_checked(monkeypatch):
    monkeypatch.setenv("SPEECH_MODEL__BUCKET", "models-eu")
    with pytest.raises(ConfigError, match="SPEECH_MODEL__BUCKET='models-eu' needs SPEECH_REGION"):
        load_settings()


@pytest.mark.parametrize(
    ("variables", "why"),
    [
        ({}, "no model store is configured (SPEECH_MODEL__BUCKET)"),
        ({"SPEECH_REGION": "eu-west-1", "SPEECH_MODEL__BUCKET": "b", "SPEECH_MODEL__VERSION": "3"}, "pins the version"),
    ],
)
def test_polling_needs_a_store_and_an_unpinned_version(monkeypatch, variables, why):
    for name, value in {**variables, "SPEECH_MODEL__POLL_INTERVAL_S": "60"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"SPEECH_MODEL__POLL_INTERVAL_S=60 polls the store") as error:
        load_settings()
    assert why in str(error.value)


def test_api_keys_come_as_comma_separated_hashes_and_from_a_secret_file(monkeypatch, tmp_path):
    first, second = (hashlib.sha256(key).hexdigest() for key in (b"key-one", b"key-two"))
    secret = tmp_path / "hashes"
    secret.write_text(f"# rotated weekly\n{second.upper()}\n\n")
    monkeypatch.setenv("SPEECH_AUTH__API_KEY_HASHES", f" {first} ,")
    monkeypatch.setenv("SPEECH_AUTH__API_KEY_HASHES_FILE", str(secret))
    auth = load_settings().auth
    assert auth.is_enabled
    assert auth.key_hashes() == {first, second}


def test_admin_keys_are_a_separate_set_and_off_by_default(monkeypatch, tmp_path):
    api, admin, from_file = (hashlib.sha256(key).hexdigest() for key in (b"transcribe", b"admin", b"admin-2"))
    assert load_settings().auth.admin_hashes() == frozenset()
    secret = tmp_path / "admin-hashes"
    secret.write_text(f"{from_file}\n")
    monkeypatch.setenv("SPEECH_AUTH__API_KEY_HASHES", api)
    monkeypatch.setenv("SPEECH_AUTH__ADMIN_KEY_HASHES", admin)
    monkeypatch.setenv("SPEECH_AUTH__ADMIN_KEY_HASHES_FILE", str(secret))
    auth = load_settings().auth
    assert auth.key_hashes() == {api}
    assert auth.admin_hashes() == {admin, from_file}


def test_a_bad_line_in_the_hash_file_names_the_file_variable(monkeypatch, tmp_path):
    secret = tmp_path / "hashes"
    secret.write_text("not-a-hash\n")
    monkeypatch.setenv("SPEECH_AUTH__API_KEY_HASHES_FILE", str(secret))
    with pytest.raises(ConfigError, match=r"SPEECH_AUTH__API_KEY_HASHES_FILE=.*line 1 'not-a-hash'"):
        load_settings().auth.key_hashes()


def test_python_m_serving_exits_with_the_bad_variable_named(monkeypatch):
    monkeypatch.setenv("SPEECH_STREAM__MAX_FRAME_BYTES", "-1")
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--port", "1"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "SPEECH_STREAM__MAX_FRAME_BYTES='-1': Input should be greater than 0" in result.stderr
