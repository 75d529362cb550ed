"""Beam search on the exported graphs: every beam of a window reads one copy of its audio features, a beam of one
is greedy search, windows decoded together come out as each decoded alone (so one request's windows never change
another's words), and a window the guards send back is sampled again. What beams buy in accuracy is measured by
``python -m bench.longform``."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
from onnx import TensorProto, helper

from serving.decoding import Decoded
from serving.mel import window_features
from serving.model_dir import (
    DECODER_FILE,
    ENCODER_FILE,
    SPEECH_CLIP,
    TOKENIZER_FILE,
    ModelError,
    decoder_inputs,
    write_manifest,
)
from serving.whisper_beam import beam_decode
from serving.whisper_onnx import WhisperOnnxEngine, load_engine


class Parts:
    """The sessions, config and decoder of a loaded engine, driven step by step."""

    def __init__(self, engine: WhisperOnnxEngine) -> None:
        self.config = engine.config
        self.encoder, self.decoder = engine._sessions()  # the engine's own: one load for the whole module
        self.whisper = engine._whisper
        self._encoded: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}

    def cross_arrays(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Each decoder layer's cross K and V for ``clips``, one row per clip."""
        per_clip = [self._encoded_once(clip) for clip in clips]
        return [np.concatenate(layer) for layer in zip(*per_clip, strict=True)]

    def _encoded_once(self, clip: np.ndarray) -> list[np.ndarray]:
        """The encoder's outputs for ``clip``, computed on its first use only: a 30 s window is much of what these
        tests cost, and the outputs are never handed out (``cross_arrays`` concatenates them into new arrays)."""
        if id(clip) not in self._encoded:  # the clip is kept with its outputs, so its id is never reused
            self._encoded[id(clip)] = (
                clip,
                self.encoder.run(None, {"mel": window_features(clip, self.config.n_mels)[None]}),
            )
        return self._encoded[id(clip)][1]

    def cross(self, clips: list[np.ndarray]) -> dict[str, ort.OrtValue | np.ndarray]:
        names = [o.name for o in self.encoder.get_outputs()]
        self._kept = self.cross_arrays(clips)  # OrtValues on the CPU read these arrays' memory
        cross: dict[str, ort.OrtValue | np.ndarray] = {
            name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in zip(names, self._kept, strict=True)
        }
        cross["cross_frames"] = np.full(len(clips), self.config.n_audio_ctx, np.int64)  # whole windows
        return cross


@pytest.fixture(scope="module")
def parts(tiny_en_engine) -> Parts:
    """tiny.en: these tests are about the search and the graph's rows, which every model size shares; what beams buy
    in accuracy is the bench's (base)."""
    return Parts(tiny_en_engine)


@pytest.fixture(scope="module")
def clips(synthesize) -> list[np.ndarray]:
    speech, _ = sf.read(SPEECH_CLIP, dtype="float32")
    return [
        speech,
        synthesize("Glue the sheet to the dark blue background.", voice="en-us+m3"),
        synthesize("The box was thrown beside the parked truck, and the rain kept falling all night long."),
    ]


def _run(parts: Parts, steps: list[tuple[list[int], list[int]]], cross: list[np.ndarray]) -> np.ndarray:
    """Feed each step's (token per row, source row per row) to the decoder; the last step's logits."""
    cfg = parts.config
    rows = len(steps[0][0])
    past = []
    for _ in range(cfg.n_decoder_layers):
        past += [np.zeros((rows, cfg.n_heads, cfg.head_dim, 0), np.float32)]
        past += [np.zeros((rows, cfg.n_heads, 0, cfg.head_dim), np.float32)]
    names = decoder_inputs(cfg.n_decoder_layers)
    logits = None
    for offset, (tokens, sources) in enumerate(steps):
        caches = [t for i in range(cfg.n_decoder_layers) for t in (*past[2 * i : 2 * i + 2], *cross[2 * i : 2 * i + 2])]
        values = [np.array(tokens, np.int64)[:, None], np.array(offset, np.int64), np.array(sources, np.int64)]
        values.append(np.full(len(cross[0]), cross[0].shape[-1], np.int64))  # every window's audio is whole
        logits, *past = parts.decoder.run(None, dict(zip(names, [*values, *caches], strict=True)))
    assert logits is not None
    return logits


def test_every_beam_of_a_window_reads_one_copy_of_its_audio_and_continues_the_row_it_names(parts, clips):
    """Two windows of two beams: the beams of a window feed different words, then swap pasts (as a beam search
    reorders its beams). Each row's logits are those of its history decoded alone on its own window."""
    cross = parts.cross_arrays(clips[:2])  # one copy per window: [2, ...] for 4 rows
    sot = parts.config.sot
    a, b, c = parts.whisper.tokens_of("glue sheet dark")[:3]
    together = _run(parts, [([sot] * 4, [0, 1, 2, 3]), ([a, b, a, b], [0, 1, 2, 3]), ([c] * 4, [1, 0, 3, 2])], cross)
    # Row 0 continued row 1's past (sot, b), row 1 row 0's (sot, a); likewise rows 2 and 3 on the second window.
    for row, (window, word) in enumerate([(0, b), (0, a), (1, b), (1, a)]):
        own = [t[window : window + 1] for t in cross]
        # Two copies of the row: onnxruntime's INT8 MatMuls may take another kernel for a single row.
        alone = _run(parts, [([sot] * 2, [0, 1]), ([word] * 2, [0, 1]), ([c] * 2, [0, 1])], own)
        assert np.abs(together[row] - alone[0]).max() < 1e-3, row
    assert np.abs(together[0] - together[1]).max() > 0.1, "different histories must give different logits"
    assert np.abs(together[0] - together[2]).max() > 0.1, "different windows must give different logits"


def test_a_beam_of_one_is_greedy_search(parts, clips):
    cross = parts.cross(clips)
    ends = [len(clip) / 16_000 for clip in clips]
    greedy, _ = parts.whisper.decode(parts.decoder, cross, len(clips), "en", 0.0, None, speech_ends=ends)
    beam, _ = beam_decode(parts.whisper, parts.decoder, cross, len(clips), "en", beam=1, speech_ends=ends)
    assert [d.tokens for d in beam] == [d.tokens for d in greedy]
    assert [d.text for d in beam] == [d.text for d in greedy]
    assert all(d.text for d in beam)


def test_windows_searched_together_come_out_as_each_searched_alone(parts, clips):
    """The windows end at different steps; those that finish leave the pass without disturbing the others."""
    ends = [len(clip) / 16_000 for clip in clips]
    together, _ = beam_decode(parts.whisper, parts.decoder, parts.cross(clips), len(clips), "en", speech_ends=ends)
    assert len({len(d.tokens) for d in together}) == len(clips), "the clips must end at different steps"
    for clip, end, joint in zip(clips, ends, together, strict=True):
        (alone,), _ = beam_decode(parts.whisper, parts.decoder, parts.cross([clip]), 1, "en", speech_ends=[end])
        assert alone.tokens == joint.tokens
        assert alone.sum_logprob == pytest.approx(joint.sum_logprob, abs=1e-3)


def test_a_window_the_guards_send_back_after_a_beam_search_is_sampled_again_hotter(tiny_en_engine, clips, monkeypatch):
    """The search rearranged the batch's K/V as windows finished: the window is encoded again for its samples."""
    monkeypatch.setattr(Decoded, "needs_fallback", property(lambda d: d.temperature == 0.0))
    result = tiny_en_engine.transcribe(clips[0], "en")
    assert result.segments and all(s.temperature == 0.2 for s in result.segments)
    assert "lazy dog" in result.text.lower(), result.text


def test_a_model_exported_before_beam_search_is_refused_at_load_with_what_to_do(tiny_en_model_dir, tmp_path):
    """A decoder without ``beam_source`` (model 1.1.0 and older, e.g. in a store) is refused when loaded, not on the
    first request."""
    old = tmp_path / "model"
    old.mkdir()
    for name in (ENCODER_FILE, TOKENIZER_FILE, "config.json"):
        (old / name).symlink_to(tiny_en_model_dir / name)
    tokens = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "tokens"])
    logits = helper.make_tensor_value_info("logits", TensorProto.INT64, ["batch", "tokens"])
    graph = helper.make_graph([helper.make_node("Identity", ["tokens"], ["logits"])], "old", [tokens], [logits])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(old / DECODER_FILE))
    write_manifest(old, "whisper-tiny.en", "1.1.0", "tiny.en")
    with pytest.raises(ModelError, match=r"has no input offset, beam_source, cross_frames, past_k_0.*older recipe"):
        load_engine(old)
