"""The CTranslate2 reader must understand the real bundled files and refuse anything it would misread."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from serving.build.ct2_weights import Ct2FormatError, parse_ct2_model
from serving.build.export import bundled_weights


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _model_bin(version: int = 6, variables: dict[str, np.ndarray] | None = None, aliases=()) -> bytes:
    variables = variables if variables is not None else {"w": np.arange(6, dtype=np.float16).reshape(2, 3)}
    dtype_ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("float16"): 4}
    out = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, value in variables.items():
        out += _string(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<BI", dtype_ids[value.dtype], value.nbytes) + value.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases)
    return out


@pytest.mark.parametrize(
    ("profile", "layers", "width", "heads", "vocab"), [("base", 6, 512, 8, 51865), ("tiny.en", 4, 384, 6, 51864)]
)
def test_bundled_weights_parse_into_the_published_whisper_sizes(profile, layers, width, heads, vocab):
    from serving.build.whisper_torch import dims_of  # imports torch: here, not at collection

    model = parse_ct2_model(bundled_weights(profile), profile)
    dims = dims_of(model)
    assert (dims.n_encoder_layers, dims.n_decoder_layers, dims.d_model, dims.n_heads) == (layers, layers, width, heads)
    assert (dims.n_vocab, dims.n_mels, dims.n_audio_ctx, dims.n_text_ctx) == (vocab, 80, 1500, 448)
    assert model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]


def test_variables_scalars_and_aliases_round_trip():
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    data = _model_bin(variables={"w": weight, "heads": np.array(8, np.int16)}, aliases=[("tied", "w")])
    model = parse_ct2_model(data, "synthetic")
    np.testing.assert_array_equal(model.variables["tied"], weight)
    assert model.scalar("heads") == 8 and model.spec_revision == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_model_bin(version=5), "binary version 5; only 6"),
        (_model_bin()[:40], "truncated"),
        (_model_bin() + b"\0\0", "trailing bytes"),
        (_model_bin(aliases=[("tied", "missing")]), "alias tied points at missing variable missing"),
    ],
)
def test_files_it_would_misread_are_refused_by_name(data, message):
    with pytest.raises(Ct2FormatError, match=message):
        parse_ct2_model(data, "model.bin")
