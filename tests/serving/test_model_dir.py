"""A model directory that does not match its manifest must never load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

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
