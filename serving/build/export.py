"""Build a servable model directory from the Whisper weights shipped inside pip packages.

Run at set-up time (image build or first start), never per request::

    python -m serving.build.export --profile base|tiny.en [--cache-dir DIR] [--force]

Steps: read the CTranslate2 fp16 weights, rebuild Whisper in torch (fp32), export an encoder that also emits
the cross-attention K/V and a KV-cached decoder step to ONNX, quantize both (the encoder to dynamic INT8, the
decoder to INT8 weights against activations quantized per row), check the ONNX graphs against torch on a real
clip, then publish ``<cache>/<name>/<version>/`` with a rename so readers never see a half-written directory.
Weights are never downloaded: a missing package is an install problem, reported as such.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from serving.build.cache import ensure_built
from serving.build.ct2_weights import parse_ct2_model
from serving.build.row_int8 import WEIGHT_BITS
from serving.bundled import MODEL_VERSION, PROFILES, Profile, model_dir_for, package_file, profile_of
from serving.model_dir import (
    CACHE_ENV,
    DECODER_FILE,
    DEFAULT_CACHE,
    ENCODER_FILE,
    TOKENIZER_FILE,
    ModelError,
    WhisperConfig,
    WhisperDims,
    decoder_inputs,
    decoder_outputs,
    encoder_outputs,
    write_config,
    write_manifest,
)

if TYPE_CHECKING:
    import onnx

    from serving.build.whisper_torch import WhisperDecoderStep, WhisperEncoder

# torch, onnx and the quantizers are imported by the functions that build: finding a model already in the cache
# (every start, every test session) takes none of them (torch alone is 2.4 s of imports).

log = logging.getLogger(__name__)

_OPSET = 17
# The encoder MLPs' second projections, by the node names torch gives ``layers.<i>.mlp.fc2``.
_FC2_NODE = "/mlp/fc2/"
# The decoder's tied embedding, [d_model, vocab]: its MatMul is the vocabulary projection.
_VOCAB = "vocab"


class ExportError(ModelError):
    """The bundled weights could not be turned into a model directory, or the result failed its checks."""


def _source_version(profile: Profile) -> str:
    packages = sorted({package for package, _ in profile.model_parts})
    return ", ".join(f"{p}=={importlib.metadata.version(p)}" for p in packages)


def _config_for(profile: str, source: Profile, dims: WhisperDims) -> WhisperConfig:
    """Token ids from the tokenizer's added tokens, suppression lists from the CTranslate2 config."""
    tokenizer = json.loads(package_file(source.package, f"{source.data_dir}/{TOKENIZER_FILE}").read_text())
    ct2_config = json.loads(package_file(source.package, f"{source.data_dir}/config.json").read_text())
    ids = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    sot, translate = ids["<|startoftranscript|>"], ids["<|translate|>"]
    languages = {content[2:-2]: i for content, i in ids.items() if sot < i < translate}
    return WhisperConfig(
        **asdict(dims),
        profile=profile,
        # English-only checkpoints have one token fewer; Whisper itself tells them apart this way.
        is_multilingual=dims.n_vocab >= 51865,
        eot=ids["<|endoftext|>"],
        sot=sot,
        transcribe=ids["<|transcribe|>"],
        translate=translate,
        no_timestamps=ids["<|notimestamps|>"],
        no_speech=ids.get("<|nospeech|>") or ids["<|nocaptions|>"],  # renamed in later tokenizers
        languages=languages,
        suppress_ids=list(ct2_config["suppress_ids"]),
        suppress_ids_begin=list(ct2_config["suppress_ids_begin"]),
    )


def _export_onnx(encoder: WhisperEncoder, decoder: WhisperDecoderStep, config: WhisperConfig, out: Path) -> None:
    import torch

    layers, heads, head_dim = config.n_decoder_layers, config.n_heads, config.head_dim
    mel = torch.zeros(1, config.n_mels, 2 * config.n_audio_ctx)
    # Traced with two beams of one window, so rows and windows are told apart in the graph.
    per_layer_cache = (
        torch.zeros(2, heads, head_dim, 1),
        torch.zeros(2, heads, 1, head_dim),
        torch.zeros(1, heads, head_dim, config.n_audio_ctx),
        torch.zeros(1, heads, config.n_audio_ctx, head_dim),
    )
    step_args = (
        torch.zeros(2, 2, dtype=torch.int64),
        torch.tensor(1, dtype=torch.int64),
        torch.tensor([1, 0], dtype=torch.int64),
        torch.tensor([config.n_audio_ctx], dtype=torch.int64),
        *per_layer_cache * layers,
    )
    inputs, outputs = decoder_inputs(layers), decoder_outputs(layers)
    # Axes by name without the layer suffix ("past_k_3" -> "past_k"); offset is a scalar. The audio axis is
    # dynamic so a draft can encode a few seconds instead of a padded 30 s window.
    grown = {
        "mel": {2: "frames"},
        "cross_k": {3: "audio"},
        "cross_v": {2: "audio"},
        "tokens": {1: "tokens"},
        "past_k": {3: "past"},
        "past_v": {2: "past"},
        "present_k": {3: "total"},
        "present_v": {2: "total"},
    }

    def axes(names: list[str], windows: bool = False) -> dict[str, dict[int, str]]:
        """Axis 0 is the rows; the decoder's cross K/V have one row per window, the rows are windows x beams."""

        def rows(name: str) -> str:
            return "windows" if windows and name.startswith("cross_") else "batch"  # cross_frames too

        return {name: {0: rows(name), **grown.get(name.rsplit("_", 1)[0], {})} for name in names}

    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs onnxscript; for these
        # two static graphs the older exporter is exact and has no extra dependency.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (mel,),
            str(out / "encoder.fp32.onnx"),
            dynamo=False,
            opset_version=_OPSET,
            input_names=["mel"],
            output_names=encoder_outputs(layers),
            dynamic_axes=axes(["mel", *encoder_outputs(layers)]),
        )
        torch.onnx.export(
            decoder,
            step_args,
            str(out / DECODER_FILE),
            dynamo=False,
            opset_version=_OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes([name for name in inputs + outputs if name != "offset"], windows=True),
        )


def _quantize_encoder(fp32: Path, int8: Path) -> None:
    """Dynamic INT8 on the weight MatMuls except each MLP's second projection.

    Dynamic quantization gives an activation matrix one scale, and the GELU output that feeds ``fc2`` has
    outliers that scale cannot cover: measured on the bench's 102 clips, INT8 everywhere gave 16.5% WER, fp32
    everywhere 14.2%, INT8 but ``fc2`` 13.5%, for about 10% more encode time than INT8 everywhere. ConvInteger is
    slower than the fp32 Conv on CPU and the two convs are small, so only MatMuls are quantized. The encoder runs
    one window at a time, so that one scale never mixes windows.

    Weights take 7 bits (``reduce_range``), for the reason ``serving/build/row_int8.py`` gives: with 8, the u8s8
    kernel of CPUs without VNNI saturates. Measured on an AVX2 EPYC (base, then tiny.en), the encoder drifted
    from torch by 0.28 and 0.83 with 8-bit weights, 0.17 and 0.11 with 7, 0.16 and 0.08 with 8 bits on the exact
    (and slower) u8u8 kernel; tiny.en's greedy tokens agreed 77%, 91% and 95% of the time. WER on the bench's
    102 clips there (base, greedy): 8 bits 13.7%, 7 bits 14.2%, u8u8 13.7%, 4 words of 849 apart. u8u8 encodes
    6-9% slower there and cannot use VNNI where it exists, so 7 bits it is.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [
        node.name for node in onnx.load(str(fp32), load_external_data=False).graph.node if node.op_type == "MatMul"
    ]
    keep_fp32 = [name for name in names if _FC2_NODE in name]
    if not keep_fp32:
        raise ExportError(f"no MatMul named *{_FC2_NODE}* in {fp32.name}; the encoder's module names changed")
    quantize_dynamic(
        fp32,
        int8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=keep_fp32,
        extra_options={"MatMulConstBOnly": True},
    )


def _quantize_decoder(fp32: Path, int8: Path) -> None:
    """INT8 weights against activations quantized per row, on every weight MatMul; attention multiplies
    activations and stays fp32. The vocabulary projection (the largest) runs onnxruntime's u8s8 GEMM
    (``serving/build/row_int8.py``), the rest 8-bit ``MatMulNBits`` (blocks of 32, accuracy level 4).

    Per row matters: a decoder step carries several windows and beams, and dynamic quantization's one scale per
    activation matrix made each row's logits depend on the others (a window decoded differently beside others
    than alone, beams scored against each other's numbers). Measured on 2 cores, a beam-5 step of 8 windows (40
    rows): 44 ms, against 58 ms with ``MatMulNBits`` everywhere (the recipe up to model 1.3.0) and 49 ms with the
    u8s8 rewrite everywhere, whose quantizing nodes cost more than they save on the small MatMuls and whose
    ``fc2`` (GELU outliers in its input) cost accuracy: WER on the 102 short clips at beam 5 12.1% (1.3.0: 12.1%,
    u8s8 everywhere 12.7%), greedy 13.4% (13.7%, 13.5%); on the 10-minute long-form bench 9.6% (9.8%, 10.0%).
    """
    import onnx

    # At import this module configures the root logger (basicConfig at INFO) for whoever comes next.
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from serving.build.row_int8 import quantize_rows

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    model = onnx.load(str(fp32))
    vocab = [node.name for node in model.graph.node if node.op_type == "MatMul" and node.input[1] == _VOCAB]
    if len(vocab) != 1:
        raise ExportError(f"{fp32.name} has {len(vocab)} MatMuls by {_VOCAB!r}; the decoder's graph changed")
    quantize_rows(model, vocab)
    _half_lookup(model)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=32,
        is_symmetric=True,
        accuracy_level=4,
        algo_config=DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=8),
    )
    quantizer.process()
    if not any(node.op_type == "MatMulNBits" for node in quantizer.model.model.graph.node):
        raise ExportError(f"no MatMul of {fp32.name} was quantized; onnxruntime's MatMulNBits quantizer changed")
    quantizer.model.save_model_to_file(str(int8), use_external_data_format=False)


def _half_lookup(model: onnx.ModelProto) -> None:
    """Make the token lookup (a ``Gather`` on the tied embedding) read an fp16 copy of the table, cast to fp32 after
    the ``Gather``; the fp32 table then goes, since the vocabulary projection reads its INT8 copy. The bundled
    weights are CTranslate2's fp16, so the copy holds exactly the same numbers (checked here), and the decoder's
    file loses half of its largest table: tiny.en's from 110 to 70 MB, base's from 159 to 106 MB (model 1.6.0), which
    every pull, hash, load and replica's memory pays for."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    lookups = [i for i, node in enumerate(graph.node) if node.op_type == "Gather" and node.input[0] == _VOCAB]
    tables = [init for init in graph.initializer if init.name == _VOCAB]
    if len(lookups) != 1 or len(tables) != 1:
        raise ExportError(
            f"the decoder has {len(lookups)} lookups in {len(tables)} {_VOCAB!r} tables; its graph changed"
        )
    values = numpy_helper.to_array(tables[0])
    half = values.astype(np.float16)
    if not np.array_equal(half.astype(np.float32), values):
        raise ExportError(f"the decoder's {_VOCAB!r} table does not hold fp16 numbers; its lookup would change in fp16")
    lookup = graph.node[lookups[0]]
    gathered = lookup.output[0]
    lookup.input[0], lookup.output[0] = f"{_VOCAB}/fp16", f"{gathered}/fp16"
    graph.initializer.append(numpy_helper.from_array(half, f"{_VOCAB}/fp16"))
    cast = helper.make_node("Cast", [lookup.output[0]], [gathered], f"{lookup.name}/Cast", to=TensorProto.FLOAT)
    graph.node.insert(lookups[0] + 1, cast)
    if not any(_VOCAB in node.input for node in graph.node):
        graph.initializer.remove(tables[0])


def bundled_weights(profile: str) -> bytes:
    """The CTranslate2 ``model.bin`` of a bundled profile, reassembled from its package parts."""
    source = profile_of(profile)
    return b"".join(package_file(package, path).read_bytes() for package, path in source.model_parts)


def load_torch_whisper(profile: str) -> tuple[WhisperEncoder, WhisperDecoderStep, WhisperConfig]:
    """The fp32 torch model and runtime config of a bundled profile: the reference every export is checked against."""
    from serving.build.whisper_torch import build_whisper

    source = profile_of(profile)
    encoder, decoder, dims = build_whisper(parse_ct2_model(bundled_weights(profile), f"{source.name} model.bin"))
    return encoder, decoder, _config_for(profile, source, dims)


def build_model_dir(profile: str, target: Path) -> Path:
    """Export ``profile`` into ``target`` (which must not exist yet) and return it."""
    from serving.build.export_check import check_export

    source = profile_of(profile)
    started = time.perf_counter()
    encoder, decoder, config = load_torch_whisper(profile)
    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="whisper-export-") as scratch:
        scratch_dir = Path(scratch)
        _export_onnx(encoder, decoder, config, scratch_dir)
        _quantize_encoder(scratch_dir / "encoder.fp32.onnx", target / ENCODER_FILE)
        _quantize_decoder(scratch_dir / DECODER_FILE, target / DECODER_FILE)
        report = check_export(
            encoder, decoder, config, target, scratch_dir / "encoder.fp32.onnx", scratch_dir / DECODER_FILE
        )
    log.info("export check for %s: %s", source.name, report)
    shutil.copyfile(package_file(source.package, f"{source.data_dir}/{TOKENIZER_FILE}"), target / TOKENIZER_FILE)
    write_config(target, config)
    write_manifest(target, source.name, MODEL_VERSION, profile, "asr", int8_weight_bits=WEIGHT_BITS)
    log.info("exported %s (%s) in %.1f s", source.name, _source_version(source), time.perf_counter() - started)
    return target


def ensure_bundled_model(profile: str = "base", cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """The model directory for ``profile`` in the cache, built from the bundled weights if missing or unsound."""
    return ensure_built(model_dir_for(profile, cache_dir), lambda target: build_model_dir(profile, target), force=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.build.export", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="base")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"cache root (default ${CACHE_ENV} or {DEFAULT_CACHE})"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a sound model directory exists")
    args = parser.parse_args(argv)
    # onnxruntime.quantization logs every skipped node at INFO on the root logger; keep ours only.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    try:
        path = ensure_bundled_model(args.profile, args.cache_dir, force=args.force)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
