"""Reference-counted engines: a swapped-out model keeps serving its holders and closes when the last one leaves."""

from __future__ import annotations

import pytest

from serving.model_dir import ModelError
from serving.registry import EngineRegistry, ModelInfo, RegistryClosedError
from serving.whisper_onnx import WhisperOnnxEngine, load_engine


def test_a_swapped_out_engine_serves_its_holder_then_closes_on_release(tiny_en_model_dir, synthesize):
    """Two loads of tiny.en, the quickest model: reference counting is the same for every model."""
    speech = synthesize("Rice is often served in round bowls.", engine="flite")
    registry: EngineRegistry[WhisperOnnxEngine] = EngineRegistry()
    old, new = load_engine(tiny_en_model_dir, threads=1), load_engine(tiny_en_model_dir, threads=1)
    registry.swap(old, ModelInfo("whisper-tiny.en", "1", "bundled"))
    lease = registry.acquire()
    replaced = registry.swap(new, ModelInfo("whisper-tiny.en", "2", "bundled"))
    assert replaced is not None and replaced.version == "1"
    assert [(info.version, holders) for info, holders in registry.loaded()] == [("1", 1), ("2", 0)]

    assert "round bowls" in lease.engine.transcribe(speech).text.lower(), "the holder still decodes on version 1"
    with registry.acquire() as newcomer:
        assert newcomer.engine is new
    lease.release()
    lease.release()  # a second release is a no-op, not a double decrement
    with pytest.raises(ModelError, match="is closed"):
        old.transcribe(speech)
    assert [info.version for info, _ in registry.loaded()] == ["2"]

    registry.close()
    with pytest.raises(RegistryClosedError, match="stopping"):
        registry.acquire()
    with pytest.raises(ModelError, match="is closed"):
        new.transcribe(speech)
