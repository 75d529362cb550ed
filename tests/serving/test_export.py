"""The exported graphs must compute what the torch model computes, and the cache must heal itself."""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pytest

from serving.build.export import ensure_bundled_model, load_torch_whisper
from serving.bundled import MODEL_VERSION, model_dir_for
from serving.model_dir import DECODER_FILE, ENCODER_FILE, MANIFEST_FILE, ModelError, read_manifest, verify_model_dir

if TYPE_CHECKING:
    from onnx import GraphProto


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test: its OpenMP threads spin while they wait, which on a loaded machine
    costs more CPU time than they save (a tiny.en rebuild measured 16.5-18.2 CPU-s on torch's default two threads,
    9.7-11.3 on one). The export check's report came out the same to the last digit."""
    import torch  # here, not at collection

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundled_graphs(bundled_model_dir) -> Callable[[str], GraphProto]:
    """A graph of the bundled base model by file name, each loaded once for the module (the decoder alone takes
    about 0.6 s)."""
    import onnx

    return functools.cache(lambda name: onnx.load(str(bundled_model_dir / name)).graph)


@pytest.mark.slow
def test_onnx_graphs_match_torch_on_speech_they_were_not_checked_on(bundled_model_dir, synthesize, one_torch_thread):
    from serving.build.export_check import compare_to_torch  # imports torch: here, not at collection

    encoder, decoder, config = load_torch_whisper("base")
    speech = synthesize("Please call Stella and ask her to bring these things with her from the store.", engine="flite")
    report = compare_to_torch(encoder, decoder, config, bundled_model_dir, speech)
    print(f"\nbase export vs torch: {report}")
    assert report.problems() == [], report


def test_bundled_model_directory_names_its_model_and_version(bundled_model_dir):
    manifest = read_manifest(bundled_model_dir)
    assert (manifest.name, manifest.version, manifest.profile) == ("whisper-base", MODEL_VERSION, "base")
    assert manifest.int8_weight_bits == 7  # a server on a CPU without VNNI knows it needs no warning
    assert bundled_model_dir == model_dir_for("base")


def test_every_decoder_weight_matmul_is_int8_the_vocabulary_projection_on_the_u8s8_kernel(bundled_graphs):
    graph = bundled_graphs(DECODER_FILE)
    weights = {init.name: init for init in graph.initializer}
    ops = [node.op_type for node in graph.node]
    by_weight = [node for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]
    assert by_weight == [], [node.name for node in by_weight]  # nothing left in fp32
    projections = [node for node in graph.node if node.op_type == "MatMulIntegerToFloat"]
    assert len(projections) == 1
    assert list(weights[projections[0].input[1]].dims) == [512, 51865]  # d_model x vocabulary of base
    assert ops.count("MatMulNBits") == 6 * 6  # six decoder layers, six weight MatMuls each


def test_the_token_lookup_reads_the_embedding_in_fp16_and_no_fp32_copy_is_shipped(bundled_graphs, bundled_model_dir):
    """The bundled weights are fp16, so an fp16 table holds them exactly (the export checks); an fp32 copy would
    be 106 of base's decoder's 159 MB."""
    from onnx import TensorProto

    graph = bundled_graphs(DECODER_FILE)
    tables = {init.name: init for init in graph.initializer}
    gathers = [node for node in graph.node if node.op_type == "Gather" and node.input[0] in tables]
    lookups = [node for node in gathers if tables[node.input[0]].dims[-1] == 51865]  # not the positions' [448, 512]
    assert [(tables[node.input[0]].data_type, list(tables[node.input[0]].dims)) for node in lookups] == [
        (TensorProto.FLOAT16, [512, 51865])
    ]
    casts = [node for node in graph.node if node.op_type == "Cast" and node.input[0] == lookups[0].output[0]]
    assert [(a.name, a.i) for a in casts[0].attribute] == [("to", TensorProto.FLOAT)]
    largest_fp32 = max(np.prod(init.dims) for init in tables.values() if init.data_type == TensorProto.FLOAT)
    assert largest_fp32 < 1_000_000, largest_fp32  # layer norms, biases, positions; no vocabulary-sized table
    assert (bundled_model_dir / DECODER_FILE).stat().st_size < 110_000_000


def test_every_int8_weight_takes_7_bits_so_cpus_without_vnni_compute_it_exactly(bundled_graphs):
    """See ``serving/build/row_int8.py``: with 8-bit weights the u8s8 kernel of AVX2 CPUs saturates. Dynamic
    quantization's ``reduce_range`` keeps the encoder's in [-64, 64] (255 x 64 x 2 still fits 16 bits)."""
    from onnx import numpy_helper

    largest = {}
    for name, op in ((ENCODER_FILE, "MatMulInteger"), (DECODER_FILE, "MatMulIntegerToFloat")):
        graph = bundled_graphs(name)
        weights = {init.name: init for init in graph.initializer}
        stored = [numpy_helper.to_array(weights[node.input[1]]) for node in graph.node if node.op_type == op]
        assert stored and all(w.dtype == np.int8 for w in stored), name
        largest[name] = max(int(np.abs(w.astype(np.int32)).max()) for w in stored)
    assert largest == {ENCODER_FILE: 64, DECODER_FILE: 63}


def test_a_sound_cached_model_is_reused_not_rebuilt(bundled_model_dir):
    written = (bundled_model_dir / MANIFEST_FILE).stat().st_mtime_ns
    assert ensure_bundled_model("base") == bundled_model_dir
    assert (bundled_model_dir / MANIFEST_FILE).stat().st_mtime_ns == written


@pytest.mark.slow
def test_a_tampered_cached_model_is_rebuilt(tiny_en_model_dir, tmp_path, one_torch_thread):
    target = model_dir_for("tiny.en", tmp_path)
    shutil.copytree(tiny_en_model_dir, target)
    with (target / DECODER_FILE).open("r+b") as decoder:
        decoder.seek(1000)
        decoder.write(b"\xff\xff\xff\xff")
    assert ensure_bundled_model("tiny.en", tmp_path) == target
    assert verify_model_dir(target).profile == "tiny.en"
    # Only the version and its build lock (serving/build/cache.py), which stays for the next build to take.
    left = sorted(p.name for p in target.parent.iterdir())
    assert left == sorted([target.name, f".{target.name}.lock"]), "staging or stale copies were left behind"


def test_an_unknown_profile_is_refused_with_the_choices():
    with pytest.raises(ModelError, match=re.escape("profile 'large' is not bundled; choose one of base, tiny.en")):
        ensure_bundled_model("large")
