"""A model directory that does not match its manifest must never load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from serving import model_dir
from serving.bundled import MODEL_VERSION
from serving.model_dir import CONFIG_FILE, DECODER_FILE, ENCODER_FILE, MANIFEST_FILE, TOKENIZER_FILE
from serving.whisper_onnx import ModelError, load_engine


@pytest.fixture
def model_copy(bundled_model_dir: Path, tmp_path: Path) -> Path:
    """Small files copied (so they can be tampered with), the large ONNX files linked read-only."""
    copy = tmp_path / "model"
    copy.mkdir()
    for name in (MANIFEST_FILE, CONFIG_FILE, TOKENIZER_FILE):
        shutil.copyfile(bundled_model_dir / name, copy / name)
    for name in (ENCODER_FILE, DECODER_FILE):
        (copy / name).symlink_to(bundled_model_dir / name)
    return copy


def test_an_untouched_copy_loads(model_copy):
    engine = load_engine(model_copy)
    assert (engine.name, engine.version) == ("whisper-base", MODEL_VERSION)
    engine.close()


def test_a_changed_file_is_named_with_both_hashes(model_copy):
    config = model_copy / CONFIG_FILE
    config.write_text(config.read_text().replace('"n_heads": 8', '"n_heads": 4'))
    with pytest.raises(ModelError, match=rf"{CONFIG_FILE} has sha256 [0-9a-f]{{64}}, but {MANIFEST_FILE} says"):
        load_engine(model_copy)


def test_a_missing_file_is_named(model_copy):
    (model_copy / TOKENIZER_FILE).unlink()
    with pytest.raises(ModelError, match=rf"{TOKENIZER_FILE} is listed in {MANIFEST_FILE} but missing"):
        load_engine(model_copy)


def test_a_manifest_without_a_required_file_is_refused(model_copy):
    manifest = json.loads((model_copy / MANIFEST_FILE).read_text())
    del manifest["files"][ENCODER_FILE]
    (model_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=f"lists no hash for {ENCODER_FILE}"):
        load_engine(model_copy)


@pytest.mark.parametrize("content", ["{not json", '{"name": "whisper-base"}'])
def test_a_broken_manifest_is_refused(model_copy, content):
    (model_copy / MANIFEST_FILE).write_text(content)
    with pytest.raises(ModelError, match="is not a valid manifest"):
        load_engine(model_copy)


@pytest.mark.parametrize(("field", "value"), [("version", ".."), ("version", "."), ("name", "../models")])
def test_a_manifest_naming_a_model_or_version_that_is_not_a_plain_name_is_refused(model_copy, field, value):
    manifest = json.loads((model_copy / MANIFEST_FILE).read_text())
    (model_copy / MANIFEST_FILE).write_text(json.dumps({**manifest, field: value}))
    with pytest.raises(ModelError, match=f"{value!r} is not accepted"):
        load_engine(model_copy)


def test_a_directory_without_a_manifest_is_refused(tmp_path):
    with pytest.raises(ModelError, match=f"needs {MANIFEST_FILE}"):
        load_engine(tmp_path)


def _hashes_counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files ``sha256_of`` reads from now on."""
    read: list[str] = []
    digest_of_file = hashlib.file_digest

    def counted(stream, name):
        read.append(Path(stream.name).name)
        return digest_of_file(stream, name)

    monkeypatch.setattr(hashlib, "file_digest", counted)
    return read


def _older_than_the_slack(path: Path) -> None:
    """Wait until ``path`` last changed more than the clock slack ago, as any file a server did not just write."""
    changed_ns = path.stat().st_ctime_ns
    while time.time_ns() - changed_ns <= model_dir._TIMESTAMP_SLACK_NS:
        time.sleep(0.005)


def test_an_unchanged_file_is_hashed_once_and_a_changed_one_again_though_its_size_and_mtime_are_restored(
    tmp_path, monkeypatch
):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x01" * 4096)
    _older_than_the_slack(weights)
    read = _hashes_counted(monkeypatch)
    first = model_dir.sha256_of(weights)
    assert model_dir.sha256_of(weights) == first == hashlib.sha256(b"\x01" * 4096).hexdigest()
    assert read == ["weights.bin"]
    # Tampered in place: the same size, and the modification time set back to what it was.
    stat = weights.stat()
    with weights.open("r+b") as stream:
        stream.write(b"\x02")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert model_dir.sha256_of(weights) == hashlib.sha256(b"\x02" + b"\x01" * 4095).hexdigest()
    assert read == ["weights.bin", "weights.bin"]


def test_a_file_changed_within_the_clock_slack_is_hashed_every_time(tmp_path, monkeypatch):
    monkeypatch.setattr(model_dir, "_TIMESTAMP_SLACK_NS", 3600 * 10**9)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x01" * 4096)
    read = _hashes_counted(monkeypatch)
    assert model_dir.sha256_of(weights) == model_dir.sha256_of(weights)
    assert read == ["weights.bin", "weights.bin"]
