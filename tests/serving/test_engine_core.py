"""The generic engine core: models of every kind behind one catalog, served without the build tools or torch."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from serving.bundled import MODEL_VERSION, VOICE_VERSION, voice_dir_for
from serving.metrics import ServingMetrics
from serving.model_dir import MANIFEST_FILE, VOICE_FILES, ModelError, read_manifest, verify_model_dir
from serving.model_manager import ModelCatalog
from serving.settings import ModelSettings, Settings
from serving.whisper_onnx import WhisperOnnxEngine

REPO = Path(__file__).resolve().parents[2]


def test_the_app_loads_and_warms_its_models_without_importing_torch(tiny_en_model_dir, bundled_voice_dir):
    """What the image does (it has no torch): build the app, load and warm every model; torch blocked; numpy's BLAS
    on one thread."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from pathlib import Path
        from serving.app import create_app
        from serving.settings import ModelSettings, Settings

        cache = Path({str(tiny_en_model_dir.parents[1])!r})
        app = create_app(Settings(model=ModelSettings(name="whisper-tiny.en", profile="tiny.en", cache_dir=cache)))
        models = app.state.serving.models
        asyncio.run(models.load_then_poll())
        assert models.is_ready, models.load_error
        for manager in models.managers.values():
            with manager.registry.acquire() as lease:
                print(lease.info.kind, lease.info.name, lease.info.version, lease.info.source)
        imported = [name for name, module in sys.modules.items() if module is not None]
        loaded = sorted(m for m in imported if m.split(".")[0] in ("torch", "onnx", "silero_vad"))
        loaded += sorted(m for m in imported if m.startswith("serving.build"))
        print("imported:", loaded)
        from threadpoolctl import threadpool_info
        print("blas threads:", sorted({{p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}}))
        """
    )
    # OpenBLAS starts a thread per CPU unless these say otherwise; the app keeps it to one (serving/cpu.py).
    blas_variables = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    env = {name: value for name, value in os.environ.items() if name not in blas_variables}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"asr whisper-tiny.en {MODEL_VERSION} bundled" in result.stdout
    assert f"tts piper-en-us-joe-medium {VOICE_VERSION} bundled" in result.stdout
    assert "imported: []" in result.stdout, result.stdout
    assert "blas threads: [1]" in result.stdout, result.stdout


def test_a_server_without_a_store_or_a_built_model_names_the_build_command(tmp_path):
    settings = Settings(model=ModelSettings(name="whisper-tiny.en", profile="tiny.en", cache_dir=tmp_path))
    catalog = ModelCatalog(settings, ServingMetrics("local"))
    asyncio.run(catalog.load_then_poll())
    assert not catalog.is_ready
    assert catalog.load_error == (
        "no model store is configured and the bundled asr model was never built; "
        "run `python -m serving.build.export --profile tiny.en`; the server log says why"
    )
    assert list(tmp_path.iterdir()) == [], "the server built nothing"


def test_every_asr_model_decodes_on_the_threads_the_environment_sets(tiny_en_model_dir, monkeypatch):
    monkeypatch.setenv("SPEECH_MODEL__THREADS", "1")
    monkeypatch.setenv("SPEECH_MODEL__LANGUAGES", '{"en": "whisper-tiny.en"}')
    served = [(spec.kind, spec.name, spec.threads) for spec in Settings().served_models()]
    assert served[:2] == [("asr", "whisper-base", 1), ("asr", "whisper-tiny.en", 1)]

    cache = tiny_en_model_dir.parents[1]
    model = ModelSettings(name="whisper-tiny.en", profile="tiny.en", cache_dir=cache, threads=1)
    catalog = ModelCatalog(Settings(model=model, tts={"enabled": False}), ServingMetrics("local"))
    try:
        asyncio.run(catalog.load_then_poll())
        with catalog.asr.registry.acquire() as lease:
            assert isinstance(lease.engine, WhisperOnnxEngine) and lease.engine.threads == 1
    finally:
        catalog.close()


@pytest.mark.parametrize("window_pad_s", [None, 5.0])
def test_the_warm_up_decodes_on_the_windows_batch_requests_get(tiny_en_model_dir, monkeypatch, window_pad_s):
    # Warming a 30 s window for a server whose batch requests get fitted ones would pay for a path it never serves.
    cache = tiny_en_model_dir.parents[1]
    model = ModelSettings(
        name="whisper-tiny.en", profile="tiny.en", cache_dir=cache, threads=1, window_pad_s=window_pad_s
    )
    settings = Settings(model=model, tts={"enabled": False})
    assert [spec.window_pad_s for spec in settings.served_models()] == [window_pad_s]
    warmed = []

    def transcribe(self, audio, language=None, **kwargs):
        warmed.append((kwargs.get("draft", False), kwargs.get("options")))
        return original(self, audio, language, **kwargs)

    original = WhisperOnnxEngine.transcribe
    monkeypatch.setattr(WhisperOnnxEngine, "transcribe", transcribe)
    catalog = ModelCatalog(settings, ServingMetrics("local"))
    try:
        asyncio.run(catalog.load_then_poll())
        assert catalog.is_ready, catalog.load_error
    finally:
        catalog.close()
    full = [options for draft, options in warmed if not draft]
    assert [(o.beam_size, o.window_pad_s) if o is not None else None for o in full] == [(1, window_pad_s)]


def _manifest_copy(model_dir: Path, tmp_path: Path, **changes: object) -> Path:
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    manifest.update(changes)
    manifest = {key: value for key, value in manifest.items() if value is not None}
    copy = tmp_path / "model"
    copy.mkdir()
    for name in manifest["files"]:
        (copy / name).symlink_to(model_dir / name)
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    return copy


def test_a_manifest_without_a_kind_is_an_asr_model(tiny_en_model_dir, tmp_path):
    assert read_manifest(_manifest_copy(tiny_en_model_dir, tmp_path, kind=None)).kind == "asr"


def test_a_manifest_of_an_unknown_kind_is_refused_with_the_kinds(tiny_en_model_dir, tmp_path):
    with pytest.raises(ModelError, match="has kind 'video'; a model's kind is one of asr, tts, speaker"):
        read_manifest(_manifest_copy(tiny_en_model_dir, tmp_path, kind="video"))


@pytest.mark.parametrize(
    ("machine", "flags", "saturates"),
    [
        ("x86_64", "fpu sse2 avx avx2 fma", True),  # AVX2 only: AMD EPYC up to Zen 3
        ("x86_64", "fpu avx2 avx512f avx512bw", True),  # Skylake's AVX-512, before VNNI
        ("x86_64", "fpu avx2 avx512f avx512_vnni", False),
        ("x86_64", "fpu avx2 avx_vnni", False),
        ("x86_64", "fpu avx2 avx512_vnni amx_int8 amx_tile", False),
        ("aarch64", "fp asimd asimddp", False),
        ("x86_64", None, False),  # flags unreadable: no warning on a guess
    ],
)
def test_a_cpu_without_vnni_is_known_to_saturate_8_bit_int8_weights(machine, flags, saturates):
    from serving.cpu import int8_pairs_saturate

    cpuinfo = "processor\t: 0\n" + (f"flags\t\t: {flags}\n" if flags is not None else "")
    assert int8_pairs_saturate(machine, cpuinfo) is saturates


@pytest.mark.parametrize(("bits", "warned"), [(None, True), (7, False)])
def test_a_model_with_8_bit_int8_weights_is_reported_on_a_cpu_that_saturates_them(
    tiny_en_model_dir, tmp_path, monkeypatch, caplog, bits, warned
):
    import serving.whisper_onnx as whisper_onnx

    monkeypatch.setattr(whisper_onnx, "this_cpu_saturates_int8", lambda: True)
    copy = _manifest_copy(tiny_en_model_dir, tmp_path, int8_weight_bits=bits)
    with caplog.at_level(logging.WARNING, logger="serving.whisper_onnx"):
        engine = whisper_onnx.load_engine(copy, threads=1)
    engine.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "serving.whisper_onnx"]
    expected = [f"model whisper-tiny.en {MODEL_VERSION} has 8-bit INT8 weights"] if warned else []
    assert [message.split(" (")[0] for message in messages] == expected, messages


def test_a_model_of_another_kind_is_refused_by_the_asr_engine(tiny_en_model_dir, tmp_path):
    from serving.whisper_onnx import load_engine

    copy = _manifest_copy(tiny_en_model_dir, tmp_path, kind="speaker")
    expected = rf"holds a speaker model \(whisper-tiny.en {re.escape(MODEL_VERSION)}\), not the asr model"
    with pytest.raises(ModelError, match=expected):
        load_engine(copy)


def test_the_bundled_voice_is_built_into_a_tts_model_directory_from_its_package(tmp_path):
    from serving.build.voice import ensure_bundled_voice

    voice_dir = ensure_bundled_voice("joe", tmp_path)
    assert voice_dir == voice_dir_for("joe", tmp_path)
    manifest = verify_model_dir(voice_dir, "tts")
    assert (manifest.kind, manifest.name, manifest.version, manifest.profile) == (
        "tts", "piper-en-us-joe-medium", VOICE_VERSION, "joe",
    )  # fmt: skip
    assert sorted(manifest.files) == sorted(VOICE_FILES)
    assert json.loads((voice_dir / "voice.onnx.json").read_text())["audio"]["sample_rate"] == 22050
    with pytest.raises(ModelError, match="voice 'nobody' is not bundled; choose one of joe"):
        ensure_bundled_voice("nobody", tmp_path)
